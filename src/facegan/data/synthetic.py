"""Procedural colour faces with known CelebA-style attributes: an offline dataset with ground truth.

Every face is a stack of shapes painted with numpy over a whole batch at once. Each shape is
a signed distance turned into the fraction of a pixel it covers, so even shapes painted at the
output size have antialiased edges. Outputs under 64 pixels are painted 2x to 8x larger, and
the small features (eyes, brows, glasses, nose, mouth) always at twice that again, then
box-averaged down, so thin lines keep their true weight.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

ATTRIBUTE_NAMES: tuple[str, ...] = (
    "Bald",
    "Bangs",
    "Black_Hair",
    "Blond_Hair",
    "Brown_Hair",
    "Eyeglasses",
    "Gray_Hair",
    "Male",
    "No_Beard",
    "Pale_Skin",
    "Smiling",
    "Wearing_Hat",
    "Wearing_Lipstick",
    "Young",
)

TARGET_RATES: dict[str, float] = {
    "Bald": 0.02,
    "Bangs": 0.15,
    "Black_Hair": 0.24,
    "Blond_Hair": 0.15,
    "Brown_Hair": 0.21,
    "Eyeglasses": 0.07,
    "Gray_Hair": 0.04,
    "Male": 0.42,
    "No_Beard": 0.83,
    "Pale_Skin": 0.04,
    "Smiling": 0.48,
    "Wearing_Hat": 0.05,
    "Wearing_Lipstick": 0.47,
    "Young": 0.77,
}

# Values of FaceParams.hair_color; only the first four are CelebA attributes.
BLACK, BROWN, BLOND, GRAY, OTHER = range(5)
# Values of FaceParams.hair_style (baldness is its own flag, so it can be flipped alone).
SHORT, MEDIUM, LONG = range(3)
# Values of FaceParams.hat_style.
BEANIE, CAP, BRIMMED = range(3)


@dataclass(frozen=True)
class FaceParams:
    """Everything that decides a batch of faces; each field is an array with a leading batch axis."""

    # attribute flags, each drawn so the CelebA attribute of the same meaning holds
    male: np.ndarray
    young: np.ndarray
    smiling: np.ndarray
    eyeglasses: np.ndarray
    pale_skin: np.ndarray
    bald: np.ndarray
    bangs: np.ndarray
    wearing_hat: np.ndarray
    beard: np.ndarray
    lipstick: np.ndarray
    # categories
    hair_color: np.ndarray  # BLACK, BROWN, BLOND, GRAY or OTHER
    hair_style: np.ndarray  # SHORT, MEDIUM or LONG
    hat_style: np.ndarray  # BEANIE, CAP or BRIMMED
    iris_color: np.ndarray  # index into _IRIS
    glasses_color: np.ndarray  # index into _FRAMES
    # continuous shape and colour controls; most lie in [0, 1] and are mapped to a
    # range at render time, so that flipping a flag (say male) moves them with it
    shift_x: np.ndarray
    shift_y: np.ndarray
    scale: np.ndarray
    roll: np.ndarray
    head_width: np.ndarray
    head_height: np.ndarray
    jaw: np.ndarray
    skin_tone: np.ndarray
    skin_warmth: np.ndarray
    blush: np.ndarray
    light: np.ndarray
    hair_shade: np.ndarray
    hair_volume: np.ndarray
    hair_length: np.ndarray
    hair_part: np.ndarray
    hair_wave: np.ndarray
    hairline: np.ndarray
    eye_size: np.ndarray
    eye_spacing: np.ndarray
    eye_height: np.ndarray
    eye_tilt: np.ndarray
    gaze: np.ndarray
    brow_thickness: np.ndarray
    brow_arch: np.ndarray
    brow_height: np.ndarray
    nose_length: np.ndarray
    nose_width: np.ndarray
    mouth_width: np.ndarray
    mouth_height: np.ndarray
    lip_fullness: np.ndarray
    lip_shade: np.ndarray
    glasses_shape: np.ndarray
    glasses_size: np.ndarray
    sunglasses: np.ndarray
    beard_style: np.ndarray
    stubble: np.ndarray
    neckline: np.ndarray
    hat_color: np.ndarray  # (B, 3) RGB in [0, 1]
    cloth_color: np.ndarray  # (B, 3)
    bg_color_a: np.ndarray  # (B, 3)
    bg_color_b: np.ndarray  # (B, 3)
    bg_angle: np.ndarray
    bg_vignette: np.ndarray

    def __len__(self) -> int:
        """The number of faces."""
        return len(self.male)

    def take(self, index: np.ndarray) -> FaceParams:
        """The faces at `index` (an integer or boolean array) as a new FaceParams."""
        return FaceParams(**{f.name: getattr(self, f.name)[index] for f in fields(self)})


# ---------------------------------------------------------------------------------------------
# Randomness: a counter-based hash of (seed, index, draw number), so face i of a set never
# depends on which batch or process renders it, and a batch needs no per-face generator.

_MASK64 = (1 << 64) - 1


def _mix(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser, elementwise on uint64 (wraps modulo 2**64 by design)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _uniforms(seed: int, indices: np.ndarray, count: int) -> np.ndarray:
    """Uniform [0, 1) float64 draws (len(indices), count), a pure function of (seed, index, column)."""
    key = _mix(np.array([seed & _MASK64], dtype=np.uint64))
    idx = np.asarray(indices, dtype=np.int64).astype(np.uint64)[:, None]
    col = np.arange(count, dtype=np.uint64)[None, :]
    with np.errstate(over="ignore"):
        state = _mix(idx * np.uint64(0x9E3779B97F4A7C15) + key)
        bits = _mix(state + col * np.uint64(0xD1B54A32D192ED03))
    return (bits >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


class _Draws:
    """Hands out the columns of a uniform table one by one, so each parameter keeps its column."""

    def __init__(self, table: np.ndarray) -> None:
        self.table = table
        self.next = 0

    def u(self) -> np.ndarray:
        """The next column: uniform in [0, 1)."""
        column = self.table[:, self.next]
        self.next += 1
        return column

    def bern(self, p: np.ndarray | float) -> np.ndarray:
        """True with probability p."""
        return self.u() < p

    def tri(self) -> np.ndarray:
        """A bell-shaped draw in [0, 1] (mean of two uniforms), for traits that cluster mid-range."""
        return (self.u() + self.u()) * 0.5

    def choice(self, cumulative: np.ndarray) -> np.ndarray:
        """Category index from per-face cumulative probabilities (B, K)."""
        return (self.u()[:, None] >= cumulative[:, :-1]).sum(axis=1)

    def colour(self, sat_lo: float, sat_hi: float, val_lo: float, val_hi: float) -> np.ndarray:
        """Random RGB (B, 3): a random hue, pulled towards grey and scaled to a brightness."""
        hue = self.u()[:, None]
        rgb = np.clip(np.abs((hue * 6.0 + np.array([0.0, 4.0, 2.0])) % 6.0 - 3.0) - 1.0, 0.0, 1.0)
        sat = (sat_lo + (sat_hi - sat_lo) * self.u())[:, None]
        val = (val_lo + (val_hi - val_lo) * self.u())[:, None]
        return (val * (1.0 - sat + sat * rgb)).astype(np.float32)


_DRAWS_PER_FACE = 96  # columns of the table; more than sample_params uses, so new ones can be added


def sample_params(seed: int, indices: np.ndarray) -> FaceParams:
    """Draw the parameters of faces number `indices` of the synthetic set `seed`."""
    indices = np.atleast_1d(np.asarray(indices, dtype=np.int64))
    d = _Draws(_uniforms(seed, indices, _DRAWS_PER_FACE))
    # Each draw takes the next column of the table, so these calls must stay in this order
    # (and new draws go last): reordering them would change every face of every set.
    flags = _draw_flags(d)
    colouring = _draw_skin_and_categories(d, flags["hair_color"])
    head = _draw_pose_and_head(d)
    hair = _draw_hair_shape(d)
    features = _draw_features(d)
    extras = _draw_accessories_and_background(d)
    return FaceParams(**flags, **colouring, **head, **hair, **features, **extras)


def _draw_flags(d: _Draws) -> dict[str, np.ndarray]:
    """The attribute flags and the hair's colour and style, drawn with CelebA's correlations."""
    # The conditional rates below are solved so that each marginal lands on TARGET_RATES
    # while keeping CelebA's correlations (beards on men, grey hair with age, ...).
    male = d.bern(0.42)
    young = d.bern(np.where(male, 0.70, 0.82))
    bald = male & d.bern(np.where(young, 0.02, 0.11))
    old_grey = ~young & d.bern(0.185)
    female_hair = np.array([0.21, 0.434, 0.664, 0.664, 1.0])  # cumulative: black, brown, blond, -, other
    male_hair = np.array([0.32, 0.544, 0.599, 0.599, 1.0])
    hair_color = d.choice(np.where(male[:, None], male_hair, female_hair))
    hair_color = np.where(old_grey, GRAY, hair_color)
    female_style = np.array([0.12, 0.42, 1.0])
    male_style = np.array([0.72, 0.94, 1.0])
    hair_style = d.choice(np.where(male[:, None], male_style, female_style))
    bangs = ~bald & d.bern(np.where(male, 0.0705, 0.21))
    wearing_hat = ~bald & d.bern(0.051)
    beard = male & d.bern(0.405)
    lipstick = ~male & d.bern(0.81)
    eyeglasses = d.bern(np.where(young, 0.05, 0.137))
    smiling = d.bern(0.48)
    pale_skin = d.bern(0.04)
    return {
        "male": male,
        "young": young,
        "smiling": smiling,
        "eyeglasses": eyeglasses,
        "pale_skin": pale_skin,
        "bald": bald,
        "bangs": bangs,
        "wearing_hat": wearing_hat,
        "beard": beard,
        "lipstick": lipstick,
        "hair_color": hair_color.astype(np.int64),
        "hair_style": hair_style.astype(np.int64),
    }


def _draw_skin_and_categories(d: _Draws, hair_color: np.ndarray) -> dict[str, np.ndarray]:
    """Skin tone and iris colour (both tied to the hair), then the hat style and frame colour."""
    # Skin is drawn after hair so blond hair goes mostly with lighter skin without moving
    # the hair-colour marginals.
    tone = d.u()
    skin_tone = np.where(hair_color == BLOND, 0.4 + 0.6 * tone, tone ** 0.8)
    skin_tone = np.where(hair_color == BLACK, tone, skin_tone)
    iris_choice = d.u()
    dark_eyes = (skin_tone < 0.5) | (iris_choice < 0.45)
    # both branches draw, dark first, so every face uses the same columns whichever it gets
    iris_color = np.where(dark_eyes, (d.u() * 2).astype(np.int64), 2 + (d.u() * (len(_IRIS) - 2)).astype(np.int64))
    return {
        "skin_tone": skin_tone.astype(np.float32),
        "iris_color": iris_color.astype(np.int64),
        "hat_style": (d.u() * 3).astype(np.int64),
        "glasses_color": (d.u() * len(_FRAMES)).astype(np.int64),
    }


def _draw_pose_and_head(d: _Draws) -> dict[str, np.ndarray]:
    """Pose jitter, head shape, skin warmth, blush and lighting."""
    f32 = np.float32
    return {
        "shift_x": (d.tri() * 2 - 1).astype(f32),
        "shift_y": (d.tri() * 2 - 1).astype(f32),
        "scale": d.tri().astype(f32),
        "roll": (d.tri() * 2 - 1).astype(f32),
        "head_width": d.tri().astype(f32),
        "head_height": d.tri().astype(f32),
        "jaw": d.u().astype(f32),
        "skin_warmth": (d.u() * 2 - 1).astype(f32),
        "blush": d.u().astype(f32),
        "light": (d.u() * 2 - 1).astype(f32),
    }


def _draw_hair_shape(d: _Draws) -> dict[str, np.ndarray]:
    """The hair's shade within its colour, and its volume, length, parting, wave and hairline."""
    f32 = np.float32
    return {
        "hair_shade": d.u().astype(f32),
        "hair_volume": d.u().astype(f32),
        "hair_length": d.u().astype(f32),
        "hair_part": (d.u() * 2 - 1).astype(f32),
        "hair_wave": d.u().astype(f32),
        "hairline": d.u().astype(f32),
    }


def _draw_features(d: _Draws) -> dict[str, np.ndarray]:
    """Eyes, brows, nose, mouth and lips."""
    f32 = np.float32
    return {
        "eye_size": d.tri().astype(f32),
        "eye_spacing": d.tri().astype(f32),
        "eye_height": d.tri().astype(f32),
        "eye_tilt": (d.u() * 2 - 1).astype(f32),
        "gaze": (d.tri() * 2 - 1).astype(f32),
        "brow_thickness": d.u().astype(f32),
        "brow_arch": d.u().astype(f32),
        "brow_height": d.tri().astype(f32),
        "nose_length": d.tri().astype(f32),
        "nose_width": d.tri().astype(f32),
        "mouth_width": d.tri().astype(f32),
        "mouth_height": d.tri().astype(f32),
        "lip_fullness": d.u().astype(f32),
        "lip_shade": d.u().astype(f32),
    }


def _draw_accessories_and_background(d: _Draws) -> dict[str, np.ndarray]:
    """Glasses, beard and clothes shapes, then the hat, clothes and background colours."""
    f32 = np.float32
    return {
        "glasses_shape": d.u().astype(f32),
        "glasses_size": d.u().astype(f32),
        "sunglasses": d.bern(0.2),
        "beard_style": d.u().astype(f32),
        "stubble": d.u().astype(f32),
        "neckline": d.u().astype(f32),
        "hat_color": d.colour(0.2, 0.85, 0.15, 0.9),
        "cloth_color": d.colour(0.0, 0.8, 0.1, 0.9),
        "bg_color_a": d.colour(0.0, 0.6, 0.25, 0.95),
        "bg_color_b": d.colour(0.0, 0.6, 0.15, 0.9),
        "bg_angle": (d.u() * 2 * np.pi).astype(f32),
        "bg_vignette": d.u().astype(f32),
    }


def attributes(params: FaceParams) -> np.ndarray:
    """The faces' attributes as bool (B, len(ATTRIBUTE_NAMES))."""
    p = params
    hair = ~np.asarray(p.bald, bool)
    columns = {
        "Bald": p.bald,
        "Bangs": p.bangs & hair,
        "Black_Hair": hair & (p.hair_color == BLACK),
        "Blond_Hair": hair & (p.hair_color == BLOND),
        "Brown_Hair": hair & (p.hair_color == BROWN),
        "Eyeglasses": p.eyeglasses,
        "Gray_Hair": hair & (p.hair_color == GRAY),
        "Male": p.male,
        "No_Beard": ~np.asarray(p.beard, bool),
        "Pale_Skin": p.pale_skin,
        "Smiling": p.smiling,
        "Wearing_Hat": p.wearing_hat,
        "Wearing_Lipstick": p.lipstick,
        "Young": p.young,
    }
    return np.stack([np.asarray(columns[name], bool) for name in ATTRIBUTE_NAMES], axis=1)


# ---------------------------------------------------------------------------------------------
# Palettes (sRGB in [0, 1]).

_SKIN = np.array(  # very dark to light, sampled along skin_tone
    [[0.22, 0.13, 0.09], [0.38, 0.23, 0.15], [0.56, 0.37, 0.25], [0.72, 0.52, 0.38],
     [0.84, 0.65, 0.52], [0.92, 0.76, 0.64]], np.float32)
_PALE = np.array([[0.96, 0.86, 0.80], [1.0, 0.93, 0.89]], np.float32)
_HAIR = {  # (darkest, lightest) of each category, sampled along hair_shade
    BLACK: ([0.045, 0.04, 0.04], [0.13, 0.10, 0.09]),
    BROWN: ([0.27, 0.16, 0.09], [0.46, 0.30, 0.17]),
    BLOND: ([0.80, 0.63, 0.36], [0.96, 0.87, 0.63]),
    GRAY: ([0.50, 0.50, 0.50], [0.88, 0.88, 0.87]),
}
_OTHER_HAIR = np.array(  # unlabelled colours: auburn to copper, dark blond, dyed
    [[0.40, 0.14, 0.07], [0.72, 0.34, 0.14], [0.50, 0.38, 0.24], [0.68, 0.56, 0.38],
     [0.55, 0.20, 0.40], [0.25, 0.28, 0.55]], np.float32)
_IRIS = np.array(  # the first two are the dark ones
    [[0.16, 0.09, 0.05], [0.33, 0.19, 0.09], [0.42, 0.36, 0.16], [0.27, 0.43, 0.28],
     [0.29, 0.46, 0.68], [0.45, 0.52, 0.58]], np.float32)
_FRAMES = np.array(
    [[0.04, 0.04, 0.04], [0.04, 0.04, 0.04], [0.30, 0.17, 0.08], [0.62, 0.62, 0.64],
     [0.10, 0.12, 0.30], [0.45, 0.07, 0.09], [0.70, 0.56, 0.25]], np.float32)
_LIPSTICK = np.array([[0.80, 0.05, 0.12], [0.92, 0.22, 0.40], [0.62, 0.05, 0.22]], np.float32)


def _ramp(palette: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Piecewise-linear colour (B, 3) along a palette's rows at positions t in [0, 1]."""
    pos = np.clip(t, 0.0, 1.0) * (len(palette) - 1)
    lo = np.minimum(pos.astype(np.int64), len(palette) - 2)
    frac = (pos - lo)[:, None]
    return palette[lo] * (1 - frac) + palette[lo + 1] * frac


def _hair_rgb(category: np.ndarray, shade: np.ndarray) -> np.ndarray:
    """Hair colour (B, 3) for each face's category and shade."""
    # other colours: mostly dark blond to light brown, some auburn to copper, a few dyed
    out = np.select(
        [(shade < 0.3)[:, None], (shade < 0.92)[:, None]],
        [_ramp(_OTHER_HAIR[:2], shade / 0.3), _ramp(_OTHER_HAIR[2:4], (shade - 0.3) / 0.62)],
        _ramp(_OTHER_HAIR[4:], (shade - 0.92) / 0.08),
    )
    for cat, (dark, light) in _HAIR.items():
        rgb = np.asarray(dark, np.float32) + (np.asarray(light, np.float32) - np.asarray(dark, np.float32)) * shade[:, None]
        out = np.where((category == cat)[:, None], rgb, out)
    return out.astype(np.float32)


# Pose jitter ranges (image units; the image spans -1..1). CelebA's crops are aligned on the
# eyes, so the jitter stays small.
_SHIFT_X = (-0.045, 0.045)
_SHIFT_Y = (-0.1, -0.02)
_SCALE = (0.6, 0.67)  # image units per face unit (head half-height ~ 1 face unit)
_ROLL = (-0.09, 0.09)  # radians
_EXTREME_POSES = tuple(
    np.array(values, np.float64)
    for values in zip(*[(tx, ty, s, r) for tx in _SHIFT_X for ty in _SHIFT_Y for s in _SCALE
                        for r in (_ROLL[0], 0.0, _ROLL[1])])
)


class _Traits(dict):
    """Per-face render quantities: scalars shaped (B, 1, 1), colours shaped (3, B, 1, 1).

    A subset's traits are taken lazily, on first use, since a layer reads only a few."""

    def __init__(self, values: dict | None = None, parent: _Traits | None = None,
                 index: np.ndarray | None = None) -> None:
        super().__init__(values or {})
        self._parent, self._index = parent, index

    def sub(self, index: np.ndarray) -> _Traits:
        """The traits of the faces at index."""
        return _Traits(parent=self, index=index)

    def __getattr__(self, name: str) -> np.ndarray:
        try:
            return self[name]
        except KeyError:
            if self._parent is None:
                raise AttributeError(name) from None
        v = getattr(self._parent, name)
        v = v[:, self._index] if v.ndim == 4 else v[self._index]
        self[name] = v
        return v


def _traits(p: FaceParams) -> _Traits:
    """Turn parameters into the lengths (face units: head half-height ~ 1) and colours painted."""
    f32 = np.float32
    head = _pose_and_head_traits(p)
    features = _feature_traits(p)
    lengths = {
        **head,
        **features,
        # the hair hangs from the head's sides and its bangs sit above the eyes
        **_hair_traits(p, head["W"], features["eye_y"]),
        **_body_and_accessory_traits(p),
    }
    # Shaped so that a layer's arithmetic broadcasts them over its (B, h, w) pixels, the
    # colours with their channel axis first, like the pixels (3, B, h, w).
    out = _Traits()
    for key, value in lengths.items():
        out[key] = np.asarray(value, f32).reshape(-1, 1, 1)
    for key, value in _colour_traits(p).items():
        out[key] = np.ascontiguousarray(np.asarray(value, f32).T).reshape(3, -1, 1, 1)
    bg = np.stack([np.cos(p.bg_angle), np.sin(p.bg_angle), p.bg_vignette], axis=0).astype(f32)
    out["bg_dir"] = bg.reshape(3, -1, 1, 1)
    return out


def _lerp(a: float, b: float, t) -> np.ndarray:
    """a + (b - a) * t in float32: maps a [0, 1] parameter onto the range a trait spans."""
    return (a + (b - a) * np.asarray(t, np.float32)).astype(np.float32)


def _flag_weights(p: FaceParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Male, old and smiling as float32 0/1 (B,), the weights by which flags move lengths."""
    f32 = np.float32
    return (
        np.asarray(p.male, bool).astype(f32),
        (~np.asarray(p.young, bool)).astype(f32),
        np.asarray(p.smiling, bool).astype(f32),
    )


def _pose_and_head_traits(p: FaceParams) -> dict[str, np.ndarray]:
    """Pose (shift, scale, roll), head size and jaw, lighting and blush."""
    male = np.asarray(p.male, bool)
    mf, of, sf = _flag_weights(p)
    return {
        "tx": _lerp(*_SHIFT_X, (p.shift_x + 1) / 2),
        "ty": _lerp(*_SHIFT_Y, (p.shift_y + 1) / 2),
        "s": _lerp(*_SCALE, p.scale),
        "roll": _lerp(*_ROLL, (p.roll + 1) / 2),
        "W": _lerp(0.68, 0.78, p.head_width) + 0.05 * mf,
        "H": _lerp(0.95, 1.04, p.head_height),
        "jaw": np.where(male, _lerp(0.04, 0.12, p.jaw), _lerp(0.14, 0.26, p.jaw)) + 0.04 * of,
        "light": p.light.astype(np.float32),
        "blush": (_lerp(0.0, 0.3, p.blush) + 0.2 * (1 - mf) + 0.2 * sf) * (1 - 0.5 * of),
        "cheek_y": 0.26 - 0.06 * sf,
    }


def _feature_traits(p: FaceParams) -> dict[str, np.ndarray]:
    """Where and how large the eyes, brows, nose and mouth are, and how far a smile opens."""
    male = np.asarray(p.male, bool)
    mf, of, sf = _flag_weights(p)
    eye_w = _lerp(0.13, 0.16, p.eye_size) + 0.01 * (1 - mf)
    # a smile narrows the eyes and widens the mouth
    eye_h = (_lerp(0.056, 0.076, p.eye_size) + 0.01 * (1 - mf)) * (1 - 0.15 * sf)
    eye_y = _lerp(-0.05, 0.03, p.eye_height)
    nose_tip = _lerp(0.30, 0.40, p.nose_length)
    mouth_w = (_lerp(0.22, 0.28, p.mouth_width) + 0.015 * mf) * (1 + 0.15 * sf)
    lip = (_lerp(0.042, 0.068, p.lip_fullness) + 0.01 * (1 - mf)) * (1 - 0.25 * of)
    lip = lip * np.where(p.lipstick, 1.2, 1.0)  # lipstick is drawn generously
    return {
        "eye_x": _lerp(0.27, 0.33, p.eye_spacing),
        "eye_y": eye_y,
        "eye_w": eye_w,
        "eye_h": eye_h,
        "eye_tilt": 0.1 * p.eye_tilt,
        "gaze": 0.02 * p.gaze,
        "iris_r": _lerp(0.064, 0.076, p.eye_size),
        "liner": 0.016 + 0.01 * (1 - mf) + 0.008 * np.asarray(p.lipstick, np.float32),
        "brow_y": eye_y - _lerp(0.17, 0.23, p.brow_height) + 0.03 * mf,
        "brow_t": np.where(male, _lerp(0.035, 0.055, p.brow_thickness), _lerp(0.02, 0.032, p.brow_thickness)),
        "brow_arch": np.where(male, _lerp(0.0, 0.035, p.brow_arch), _lerp(0.035, 0.075, p.brow_arch)),
        "brow_w": eye_w * 1.3,
        "nose_tip": nose_tip,
        "nose_w": _lerp(0.085, 0.12, p.nose_width) + 0.02 * mf,
        "mouth_y": nose_tip + _lerp(0.2, 0.26, p.mouth_height),
        "mouth_w": mouth_w,
        "lip": lip,
        "smile_lift": _lerp(0.06, 0.09, p.mouth_width) * sf,
        "smile_open": _lerp(0.12, 0.17, p.lip_fullness) * sf,
        "old": of,
        "smile": sf,
    }


def _hair_traits(p: FaceParams, width: np.ndarray, eye_y: np.ndarray) -> dict[str, np.ndarray]:
    """The hair's parting, hairline, volume, where its sides and back end, its wave and bangs."""
    f32 = np.float32
    male = np.asarray(p.male, bool)
    _mf, of, _sf = _flag_weights(p)
    style = np.asarray(p.hair_style)
    short, medium, long = style == SHORT, style == MEDIUM, style == LONG
    part = p.hair_part * np.where(male, 0.25, 0.4)
    # older men's hairlines recede
    hairline = np.where(male, _lerp(-0.6, -0.5, p.hairline) - 0.14 * of, _lerp(-0.62, -0.54, p.hairline))
    volume = _lerp(0.06, 0.15, p.hair_volume) + np.where(short, 0.0, 0.05)
    side_end = np.select([short, medium], [0.02, _lerp(0.55, 0.85, p.hair_length)], _lerp(0.75, 1.0, p.hair_length))
    back_end = np.where(medium, side_end + 0.1, _lerp(1.5, 2.3, p.hair_length))
    side_open = np.where(short, 0.9, _lerp(0.8, 0.9, p.hair_volume)) * width
    return {
        "part": part.astype(f32),
        "hairline": hairline.astype(f32),
        "volume": volume.astype(f32),
        "side_end": side_end.astype(f32),
        "back_end": back_end.astype(f32),
        "side_open": side_open.astype(f32),
        "lock_fade": np.where(long, 4.0, 1.0),  # long locks fade into the hair behind them
        "wave": _lerp(0.0, 0.9, p.hair_wave) * np.where(short, 0.3, 1.0).astype(f32),
        "bangs_y": eye_y - _lerp(0.3, 0.36, p.hairline),
        "bangs": (np.asarray(p.bangs, bool) & ~np.asarray(p.bald, bool)).astype(f32),
    }


def _body_and_accessory_traits(p: FaceParams) -> dict[str, np.ndarray]:
    """Neck, neckline and shoulders, how strong the beard or stubble is, the glasses and hat."""
    f32 = np.float32
    male = np.asarray(p.male, bool)
    mf, _of, _sf = _flag_weights(p)
    beard = np.asarray(p.beard, bool)
    # only men without a beard show stubble, and only past a threshold
    stubble = male & ~beard & (p.stubble > 0.45)
    return {
        "neck_w": _lerp(0.3, 0.34, p.head_width) + 0.07 * mf,
        "neckline": _lerp(0.12, 0.55, p.neckline) * (1 - 0.6 * mf),
        "shoulder_w": _lerp(1.55, 1.8, p.head_width) + 0.3 * mf,
        "beard_style": p.beard_style.astype(f32),
        "beard_a": np.where(beard, 0.93, np.where(stubble, _lerp(0.0, 0.3, p.stubble), 0.0)).astype(f32),
        "glass_w": _lerp(0.15, 0.19, p.glasses_size),
        "glass_h": _lerp(0.1, 0.15, p.glasses_size) * (1 + 0.15 * p.glasses_shape),
        "glass_round": _lerp(0.03, 1.0, p.glasses_shape),
        # frames of colour 3 (silver) are drawn thinner, like metal ones
        "glass_t": np.where(p.glasses_color == 3, 0.018, 0.028) + 0.008 * p.glasses_size,
        "tint": np.where(np.asarray(p.sunglasses, bool), 0.88, 0.16).astype(f32),
        "hat_style": np.asarray(p.hat_style).astype(f32),
    }


def _skin_rgb(p: FaceParams) -> np.ndarray:
    """Skin colour (B, 3): its tone along the palette, warmed or cooled, duller with age."""
    _mf, of, _sf = _flag_weights(p)
    skin = np.where(np.asarray(p.pale_skin, bool)[:, None], _ramp(_PALE, p.skin_tone), _ramp(_SKIN, p.skin_tone))
    warm = p.skin_warmth[:, None] * np.array([0.03, 0.0, -0.03], np.float32)
    skin = skin + warm
    # older skin is a little duller and darker
    grey = skin.mean(axis=1, keepdims=True)
    return skin + (grey - skin) * (0.2 * of[:, None]) - 0.04 * of[:, None]


def _beard_rgb(p: FaceParams, hair: np.ndarray, skin: np.ndarray) -> np.ndarray:
    """Beard colour (B, 3): darker than the hair for a beard, a shadow of skin and hair for stubble."""
    f32 = np.float32
    beard = np.asarray(p.beard, bool)
    # beards grow darker than the hair; darker still where they would melt into the skin
    beard_rgb = hair * 0.72
    lum = np.array([0.3, 0.59, 0.11], f32)
    close = np.abs((beard_rgb - skin) @ lum) < 0.12
    beard_rgb = np.where((close & (skin @ lum > 0.2))[:, None], beard_rgb * 0.55, beard_rgb)
    return np.where(beard[:, None], beard_rgb, skin * 0.5 + hair * 0.15)


def _colour_traits(p: FaceParams) -> dict[str, np.ndarray]:
    """Every colour painted, each (B, 3): skin, hair, brows, lips, eyes, frames, beard, hat, clothes, bg."""
    f32 = np.float32
    mf, _of, _sf = _flag_weights(p)
    skin = _skin_rgb(p)
    hair = _hair_rgb(np.asarray(p.hair_color), p.hair_shade)
    # brows are darker than the hair, blond brows and grey ones more so
    brow = hair * np.where(p.hair_color == BLOND, 0.62, 0.8)[:, None].astype(f32)
    brow = np.where((p.hair_color == GRAY)[:, None], hair * 0.55, brow)
    lips_natural = skin * np.array([0.84, 0.64, 0.62], f32) + np.array([0.03, 0.0, 0.0], f32)
    lips_natural = lips_natural * (1 - 0.1 * mf[:, None])
    lipstick = _ramp(_LIPSTICK, p.lip_shade)
    sunglasses = np.asarray(p.sunglasses, bool)[:, None]
    return {
        "skin": skin,
        "hair": hair,
        "brow": brow,
        "lips": np.where(np.asarray(p.lipstick, bool)[:, None], lipstick, lips_natural),
        "iris": _IRIS[np.clip(p.iris_color, 0, len(_IRIS) - 1)],
        "frames": _FRAMES[np.clip(p.glasses_color, 0, len(_FRAMES) - 1)],
        "beard": _beard_rgb(p, hair, skin),
        "tint_rgb": np.where(sunglasses, np.array([0.04, 0.05, 0.07], f32), np.array([0.85, 0.92, 1.0], f32)),
        "hat": p.hat_color,
        "cloth": p.cloth_color,
        "bg_a": p.bg_color_a,
        "bg_b": p.bg_color_b,
    }


# ---------------------------------------------------------------------------------------------
# Painting machinery.


def _cov(d: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Coverage of a pixel from a signed distance d (negative inside); k is 1 / pixel size."""
    t = d * -k
    t += 0.5
    return np.clip(t, 0.0, 1.0, out=t)


def _over(px: np.ndarray, alpha: np.ndarray, colour) -> None:
    """Composite `colour` (3 arrays that broadcast) over the pixels px (3, B, h, w) in place."""
    for c in range(3):
        ch = px[c]
        t = colour[c] - ch
        t *= alpha
        ch += t


class _Canvas:
    """A window of the batch's image: pixels px (3, B, h, w), every pixel's coordinates in each
    face's own frame (x, y, each (B, h, w)), k = pixels per face unit, and the faces' traits T.

    Windows of the same resolution are views (painted in place); finer windows and subsets of
    the faces are copies that commit() writes back, box-averaged when finer."""

    def __init__(self, px: np.ndarray, u: np.ndarray, v: np.ndarray, T: _Traits,
                 parent: _Canvas | None = None, where: tuple = (), factor: int = 1) -> None:
        self.px, self.u, self.v, self.T = px, u, v, T
        self.parent, self.where, self.factor = parent, where, factor
        self.pitch = float(u[1] - u[0]) if len(u) > 1 else 2.0  # pixel width in image units
        du = u[None, None, :] - T.tx
        dv = v[None, :, None] - T.ty
        c, sn, inv = np.cos(T.roll), np.sin(T.roll), 1 / T.s
        self.x = du * (c * inv) + dv * (sn * inv)
        self.y = dv * (c * inv) - du * (sn * inv)
        self.k = T.s / self.pitch

    @classmethod
    def whole(cls, img: np.ndarray, T: _Traits) -> _Canvas:
        """The whole image (3, B, N, N), painted in place."""
        n = img.shape[-1]
        centres = ((2 * np.arange(n) + 1) / n - 1).astype(np.float32)
        return cls(img, centres, centres, T)

    def _span(self, box: tuple[float, float, float, float]) -> tuple[slice, slice]:
        """Rows and columns of this canvas that the face-frame box covers in any pose.

        The span comes from the extreme poses, never from the faces in the batch, so a face
        gets the same windows, and so the same pixels, whatever batch it is rendered in."""
        tx, ty, s, roll = _EXTREME_POSES
        cr, sr = np.cos(roll), np.sin(roll)
        xs = np.array([box[0], box[2], box[0], box[2]], np.float32)[:, None]
        ys = np.array([box[1], box[1], box[3], box[3]], np.float32)[:, None]
        us = tx + s * (cr * xs - sr * ys)
        vs = ty + s * (sr * xs + cr * ys)
        m = self.pitch
        c0, c1 = np.searchsorted(self.u, [us.min() - m, us.max() + m])
        r0, r1 = np.searchsorted(self.v, [vs.min() - m, vs.max() + m])
        return slice(r0, r1), slice(c0, c1)

    def region(self, box: tuple[float, float, float, float]) -> _Canvas | None:
        """The part of this canvas that the face-frame box covers (a view)."""
        rows, cols = self._span(box)
        if rows.stop <= rows.start or cols.stop <= cols.start:
            return None
        view = _Canvas.__new__(_Canvas)
        view.__dict__.update(self.__dict__)
        view.px = self.px[:, :, rows, cols]
        view.u, view.v = self.u[cols], self.v[rows]
        view.x, view.y = self.x[:, rows, cols], self.y[:, rows, cols]
        view.parent = None
        return view

    def finer(self, box: tuple[float, float, float, float], factor: int) -> _Canvas | None:
        """The part the box covers, `factor` times finer, to be committed back box-averaged."""
        rows, cols = self._span(box)
        if rows.stop <= rows.start or cols.stop <= cols.start:
            return None
        px = self.px[:, :, rows, cols]
        b, h, w = px.shape[1:]
        fine = np.empty((3, b, h, factor, w, factor), np.float32)
        fine[...] = px[:, :, :, None, :, None]
        offsets = ((np.arange(factor) + 0.5) / factor - 0.5) * self.pitch
        u = (self.u[cols][:, None] + offsets).astype(np.float32).ravel()
        v = (self.v[rows][:, None] + offsets).astype(np.float32).ravel()
        return _Canvas(fine.reshape(3, b, h * factor, w * factor), u, v, self.T, self, (rows, cols), factor)

    def subset(self, mask: np.ndarray) -> _Canvas | None:
        """Only the faces where mask holds (a copy), or None when there are none."""
        index = np.flatnonzero(mask)
        if len(index) == 0:
            return None
        sub = _Canvas.__new__(_Canvas)
        sub.__dict__.update(self.__dict__)
        sub.px = self.px[:, index]
        sub.x, sub.y, sub.T = self.x[index], self.y[index], self.T.sub(index)
        sub.k = self.k[index]
        sub.parent, sub.where, sub.factor = self, index, 1
        return sub

    def commit(self) -> None:
        """Write a finer window or a subset back into the canvas it came from."""
        parent, px, f = self.parent, self.px, self.factor
        if f > 1:
            acc = px[:, :, 0::f, 0::f].copy()
            for i in range(f):
                for j in range(f):
                    if i or j:
                        acc += px[:, :, i::f, j::f]
            acc *= 1.0 / (f * f)
            parent.px[:, :, self.where[0], self.where[1]] = acc
        elif parent is not None:
            parent.px[:, self.where] = px


def _shade(px: np.ndarray, alpha: np.ndarray, depth) -> None:
    """Darken px by up to `depth` where alpha > 0: shadows multiply the colour beneath them."""
    m = alpha * -depth
    m += 1
    for c in range(3):
        px[c] *= m


def _lighten(px: np.ndarray, alpha: np.ndarray, strength) -> None:
    """Blend towards white by alpha * strength: highlights and catch-lights."""
    m = alpha * strength
    for c in range(3):
        ch = px[c]
        ch += m * (1 - ch)


def _ellipse_d(x: np.ndarray, y: np.ndarray, a, b) -> np.ndarray:
    """Approximate signed distance to an axis-aligned ellipse with half-axes a, b."""
    q = (x / a) ** 2
    q += (y / b) ** 2
    np.sqrt(q, out=q)
    q -= 1
    q *= np.minimum(a, b)
    return q


def _blob(x: np.ndarray, y: np.ndarray, a, b) -> np.ndarray:
    """A smooth bump: 1 at the centre falling to 0 at the ellipse (a, b), squared for softness."""
    q = (x / a) ** 2
    q += (y / b) ** 2
    np.subtract(1, q, out=q)
    np.clip(q, 0, 1, out=q)
    q *= q
    return q


# ---------------------------------------------------------------------------------------------
# Layers, painted back to front.


def _background(cv: _Canvas) -> None:
    """A two-colour gradient in a random direction, darkened towards the corners."""
    T = cv.T
    d = T.bg_dir
    g = cv.u * (0.5 * d[0]) + cv.v * (0.5 * d[1])
    g += 0.5
    r2 = cv.u * cv.u + cv.v * cv.v
    vig = 1 - (0.3 * d[2]) * r2
    for c in range(3):
        a, b = T.bg_a[c], T.bg_b[c]
        cv.px[c][...] = (a + (b - a) * g) * vig


def _hair_texture(x: np.ndarray, y: np.ndarray, T: _Traits) -> np.ndarray:
    """Brightness of hair: strands fanning out from above the parting, gently waved."""
    # slow enough to stay under two pixels a cycle at 64x64, so it never aliases into moire
    fan = (x - T.part) / (y + 2.6)
    fan += T.wave * 0.06 * np.sin(y * 5.0)
    strands = np.sin(fan * 40.0)
    strands *= 0.1
    strands += 0.9
    return strands


def _hair_colour(x: np.ndarray, y: np.ndarray, T: _Traits, dim: float, sheen: bool = True) -> list[np.ndarray]:
    """Per-pixel hair colour: strands, a sheen across the crown, darker away from the light."""
    shade = _hair_texture(x, y, T)
    shade *= dim
    shade += (0.1 * dim) * x * T.light
    if not sheen:
        return [T.hair[c] * shade for c in range(3)]
    shine = _blob(x - 0.25 * T.light, y + 0.72 - 0.25 * x * x, 0.5, 0.13)
    shine *= 0.22 * dim
    return [T.hair[c] * shade + shine for c in range(3)]


def _hair_silhouette(x, y, T: _Traits, end, end_soft: float = 1.0) -> np.ndarray:
    """Distance to the hair mass: a cap over the skull plus a curtain hanging to y = end, with
    a wavy outline and locks at the ends; end_soft > 1 fades the ends out gradually."""
    top = _ellipse_d(x, y + 0.05, T.W + T.volume * 0.9 + 0.02, T.H + T.volume)
    ripple = np.sin(x * 11.0 + y * 5.0 + T.part * 9.0)
    ripple *= 0.018
    top += ripple
    ax = np.abs(x)
    width = T.W + T.volume * 0.9 + 0.02 + 0.12 * np.clip(y, 0, None)
    ends = y - end
    ends += 0.12 * (ax / width) ** 2
    ends += ripple * 2.5
    ends *= 1 / end_soft
    np.maximum(top, ends, out=top)
    curtain = ax - width
    curtain += ripple
    np.maximum(curtain, ends, out=curtain)
    np.maximum(curtain, -0.1 - y, out=curtain)
    return np.minimum(top, curtain, out=top)


def _hair_back(cv: _Canvas) -> None:
    """Medium and long hair falling behind the neck and shoulders, shadowed near the neck."""
    T, x, y = cv.T, cv.x, cv.y
    a = _cov(_hair_silhouette(x, y, T, T.back_end), cv.k * 0.7)
    colour = _hair_colour(x, y, T, 0.9)
    shadow = np.minimum(np.abs(x) / T.W, 1)
    shadow *= 0.4
    shadow += 0.6
    _over(cv.px, a, [ch * shadow for ch in colour])


def _neck(cv: _Canvas) -> None:
    """The neck, in the jaw's shadow at the top."""
    T, x, y = cv.T, cv.x, cv.y
    d = np.abs(x) - T.neck_w
    np.maximum(d, 0.3 - y, out=d)
    a = _cov(d, cv.k)
    shade = np.clip((y - 0.55) * 0.45, 0, 0.25)
    shade += 0.62
    shade -= 0.08 * T.light * x / T.neck_w
    _over(cv.px, a, [T.skin[c] * shade for c in range(3)])


def _clothes(cv: _Canvas) -> None:
    """Shoulders in a top whose neckline (crew to scoop) shows the neck below."""
    T, x, y = cv.T, cv.x, cv.y
    top = 1.32
    sw = T.shoulder_w
    body = _ellipse_d(x, y - top - 0.8, sw, 0.8)
    a = _cov(body, cv.k)
    scoop = _ellipse_d(x, y - top + 0.1, T.neck_w * 1.35, T.neckline + 0.1)
    a *= 1 - _cov(scoop, cv.k)
    shade = 1.0 - 0.3 * (x / sw) ** 2 + 0.12 * T.light * x / sw
    shade -= 0.15 * np.clip(1.5 - y, 0, 1)
    _over(cv.px, a, [T.cloth[c] * shade for c in range(3)])


def _ears(cv: _Canvas) -> None:
    """Both ears, darker inside."""
    T, x, y = cv.T, cv.x, cv.y
    ax = np.abs(x) - T.W * 0.95
    ay = y - 0.1
    q = (ax / 0.11) ** 2 + (ay / 0.2) ** 2
    a = _cov((np.sqrt(q) - 1) * 0.11, cv.k)
    shade = 0.68 + 0.18 * np.minimum(q, 1)
    _over(cv.px, a, [T.skin[c] * shade for c in range(3)])


def _head(cv: _Canvas) -> None:
    """The face oval, narrowing to the jaw, shaded to look round, with a little colour in the cheeks."""
    T, x, y = cv.T, cv.x, cv.y
    lower = np.clip(y, 0, None)
    w = 1 - T.jaw * lower * lower
    w *= T.W
    q = (x / w) ** 2
    q += (y / T.H) ** 2
    r = np.sqrt(q)
    r -= 1
    r *= T.W * 0.9
    a = _cov(r, cv.k)
    shade = 1.06 - 0.34 * q * q
    shade += (0.09 / T.W) * T.light * x
    shade -= 0.05 * np.clip(y - 0.5, 0, None)
    cheek = _blob(np.abs(x) - 0.42, y - T.cheek_y, 0.24, 0.17)
    cheek *= T.blush
    colour = []
    for c, flush in enumerate((0.05, -0.2, -0.18)):  # blush reddens the skin's own colour
        ch = cheek * flush
        ch += 1
        ch *= shade
        ch *= T.skin[c]
        colour.append(ch)
    _over(cv.px, a, colour)


def _beard(cv: _Canvas) -> None:
    """Full beard, chin beard or stubble over the lower face, above the beard line."""
    T, x, y = cv.T, cv.x, cv.y
    grow = 0.09 * (T.beard_a > 0.5)
    lower = np.clip(y, 0, None)
    w = 1 - T.jaw * lower * lower
    w *= T.W + grow
    q = (x / w) ** 2 + (y / (T.H + 2 * grow)) ** 2
    d = (np.sqrt(q) - 1) * T.W
    ax = np.abs(x) / T.W
    line = T.nose_tip + 0.1 + 0.12 * ax - 0.6 * ax**3
    np.maximum(d, (line - y) * 0.5, out=d)  # a soft upper edge, as beards have
    # chin beards keep to the middle; full beards run up to the ears
    chin = _ellipse_d(x, y - T.mouth_y - 0.1, 0.36, 0.45)
    chin *= 0.5
    chin -= (T.beard_style >= 0.2) * 9.0  # only chin beards are held to the chin
    np.maximum(d, chin, out=d)
    a = _cov(d, cv.k)
    a *= T.beard_a
    texture = np.sin(x * 23.0 + np.sin(y * 9.0))
    texture *= 0.05
    texture += 0.92 - 0.2 * np.clip(y - T.mouth_y, 0, 0.5)
    _over(cv.px, a, [T.beard[c] * texture for c in range(3)])


def _hair_front(cv: _Canvas, top: bool = True) -> None:
    """The hair over the skull and framing the face, with a fringe over the forehead for bangs.

    Painted in a band over the top of the head and in strips down the sides; below the band
    (top=False) the fringe's tips, the forehead shadow and the crown's sheen cannot reach, so
    they are skipped."""
    T, x, y = cv.T, cv.x, cv.y
    a = _cov(_hair_silhouette(x, y, T, T.side_end, T.lock_fade), cv.k * 0.7)
    ax = np.abs(x)
    hl = T.hairline + 0.5 * (x - T.part) ** 2
    # bangs: a fringe cut straight across just above the brows, with ragged tips
    bang = T.bangs_y + 0.06 * x * x
    if top:
        bang += np.abs(((x * 9.0) % 1.0) - 0.5) * 0.05
    hl += T.bangs * (bang - hl)
    # the face shows below the hairline, between the locks at the sides (or below where they end)
    opening = _cov(hl - y, cv.k)
    within = _cov(ax - T.side_open, cv.k)
    np.maximum(within, _cov(T.side_end - 0.12 - y, cv.k), out=within)
    opening *= within
    if top:
        # hair casts a soft shadow on the forehead just under its edge; deeper under a fringe
        shadow = _cov(y - hl - 0.08, cv.k * 0.25)
        shadow *= a
        _shade(cv.px, shadow, 0.25 + 0.2 * T.bangs)
    a *= 1 - opening
    _over(cv.px, a, _hair_colour(x, y, T, 1.0, sheen=top))


def _hair_sides(cv: _Canvas) -> None:
    """The hair hanging down the sides of the face."""
    _hair_front(cv, top=False)


def _bald_fringe(cv: _Canvas) -> None:
    """What is left on a bald head: a thin band of short hair round the sides, and a shine."""
    T, x, y = cv.T, cv.x, cv.y
    d = _ellipse_d(x, y, T.W + 0.035, T.H + 0.03)
    inner = _ellipse_d(x, y + 0.05, T.W * 0.88, T.H * 0.92)
    np.maximum(d, -inner, out=d)
    a = _cov(d, cv.k)
    a *= np.clip((y + 0.4) * 4, 0, 0.9)  # thinning out towards the crown
    a *= _cov(y - 0.05, cv.k)
    _over(cv.px, a, _hair_colour(x, y, T, 0.9))
    _lighten(cv.px, _blob(x + 0.25 * T.light, y + 0.72, 0.28, 0.14), 0.25)


def _nose(cv: _Canvas) -> None:
    """Drawn by its shadows: down the side away from the light, under the tip, round the wings."""
    T, x, y = cv.T, cv.x, cv.y
    tip = T.nose_tip
    side = _blob(x + 0.09 * T.light, y - tip * 0.7, 0.05, tip * 0.5)
    _shade(cv.px, side, 0.2)
    under = _blob(x, y - tip - 0.08, 0.13, 0.04)
    _shade(cv.px, under, 0.28)
    wings = _ellipse_d(np.abs(x) - T.nose_w * 0.9, y - tip - 0.01, 0.055, 0.05)
    np.abs(wings, out=wings)
    wings -= 0.006
    np.maximum(wings, tip - 0.02 - y, out=wings)
    _shade(cv.px, _cov(wings, cv.k), 0.3)
    holes = _ellipse_d(np.abs(x) - T.nose_w * 0.45, y - tip - 0.04, 0.04, 0.02)
    _shade(cv.px, _cov(holes, cv.k), 0.6)
    _lighten(cv.px, _blob(x - 0.02 * T.light, y - tip + 0.03, 0.05, 0.04), 0.18)


def _wrinkles(cv: _Canvas) -> None:
    """Lines of age across the forehead."""
    T, x, y = cv.T, cv.x, cv.y
    across = _blob(x, 0, 0.32, 1.0)
    across *= 0.6
    bend = y + 0.12 * x * x
    for k in range(3):
        line = np.abs(bend - (T.eye_y - 0.34 - 0.08 * k))
        line -= 0.008
        a = _cov(line, cv.k)
        a *= across
        _shade(cv.px, a, 0.45)


def _cheek_folds(cv: _Canvas) -> None:
    """Nasolabial folds from the nose wings to past the mouth corners (smiles and age)."""
    T, x, y = cv.T, cv.x, cv.y
    strength = 0.3 * T.smile + 0.4 * T.old
    y0, y1 = T.nose_tip - 0.02, T.mouth_y + 0.12 + 0.08 * T.old
    t = np.clip((y - y0) / (y1 - y0), 0, 1)
    x0, x1 = T.nose_w + 0.06, T.mouth_w + 0.05
    path = x0 + (x1 - x0) * t + 0.06 * t * (1 - t)
    d = np.abs(np.abs(x) - path) - 0.01
    np.maximum(d, np.abs(y - (y0 + y1) / 2) - (y1 - y0) / 2, out=d)
    a = _cov(d, cv.k)
    a *= strength * (1 - 0.6 * t)
    _shade(cv.px, a, 0.5)


def _brows(cv: _Canvas) -> None:
    """An arched band over each eye, thick at the inner end and thinning outward."""
    T, x, y = cv.T, cv.x, cv.y
    bx = np.abs(x) - T.eye_x - 0.02
    bw = T.brow_w
    s = np.clip(bx / bw, -1, 1)
    by = y - (T.brow_y - T.brow_arch * (1 - s * s) + 0.02 * s)
    d = np.abs(by) - T.brow_t * (0.85 - 0.35 * s)
    np.maximum(d, np.abs(bx) - bw, out=d)
    a = _cov(d, cv.k)
    a *= 0.92
    _over(cv.px, a, T.brow)


def _eyes(cv: _Canvas) -> None:
    """Socket shadow, lid crease, the white, iris, pupil, catch-light and lash line; both eyes at
    once by mirroring x."""
    T, x, y = cv.T, cv.x, cv.y
    k = cv.k
    ax = np.abs(x) - T.eye_x
    ay = y - T.eye_y - T.eye_tilt * ax
    _shade(cv.px, _blob(ax, ay + 0.03, T.eye_w * 1.35, T.eye_h * 2.2), 0.16)
    f = 1 - (ax / T.eye_w) ** 2
    upper = -T.eye_h * f
    crease = np.abs(ay - upper * 1.0 + 0.045 * np.sqrt(np.clip(f, 0, None))) - 0.007
    np.maximum(crease, np.abs(ax) - T.eye_w * 0.95, out=crease)
    _shade(cv.px, _cov(crease, k), 0.3 * 0.55)
    lower = T.eye_h * 0.75 * f
    white = _cov(np.maximum(upper - ay, ay - lower), k)
    _over(cv.px, white, (0.93, 0.91, 0.88))
    ix = ax - T.gaze * np.sign(x)
    iy = ay + 0.004
    ri = np.sqrt(ix * ix + iy * iy)
    iris = _cov(ri - T.iris_r, k)
    iris *= white
    ring = 1.15 - 0.55 * (ri / T.iris_r) ** 2
    _over(cv.px, iris, [T.iris[c] * ring for c in range(3)])
    pupil = _cov(ri - T.iris_r * 0.45, k)
    pupil *= white
    _shade(cv.px, pupil, 0.95)
    glint = _cov(np.sqrt((ix - 0.35 * T.iris_r) ** 2 + (iy + 0.35 * T.iris_r) ** 2) - T.iris_r * 0.24, k)
    glint *= white
    _lighten(cv.px, glint, 1.0)
    # lash line along the upper lid (bolder on women), a faint line along the lower
    lid = _cov(np.maximum(np.abs(ay - upper) - T.liner, np.abs(ax) - T.eye_w * 1.06), k)
    _shade(cv.px, lid, 0.85)
    low = _cov(np.maximum(np.abs(ay - lower) - 0.004, np.abs(ax) - T.eye_w * 0.9), k)
    _shade(cv.px, low, 0.2)


def _eye_bags(cv: _Canvas) -> None:
    """Age: a fold under each eye and crow's feet at the outer corners."""
    T, x, y = cv.T, cv.x, cv.y
    ax = np.abs(x) - T.eye_x
    ay = y - T.eye_y - T.eye_tilt * ax
    f = 1 - (ax / (T.eye_w * 1.1)) ** 2
    d = np.abs(ay - T.eye_h * 0.75 * f - 0.05) - 0.007
    np.maximum(d, np.abs(ax) - T.eye_w * 0.85, out=d)
    _shade(cv.px, _cov(d, cv.k), 0.3)
    cx = ax - T.eye_w - 0.05
    for slope in (-0.5, 0.0, 0.5):
        d = np.abs(ay - slope * cx) - 0.006
        np.maximum(d, np.abs(cx) - 0.04, out=d)
        _shade(cv.px, _cov(d, cv.k), 0.16)


def _glasses(cv: _Canvas) -> None:
    """Frames (round to rectangular), a bridge and arms to the ears; tinted or dark lenses."""
    T, x, y = cv.T, cv.x, cv.y
    ax = np.abs(x) - T.eye_x
    ay = y - T.eye_y - 0.02
    rr = T.glass_round * np.minimum(T.glass_w, T.glass_h)
    qx = np.abs(ax) - T.glass_w + rr
    qy = np.abs(ay) - T.glass_h + rr
    outside = np.sqrt(np.maximum(qx, 0) ** 2 + np.maximum(qy, 0) ** 2)
    d = outside + np.minimum(np.maximum(qx, qy), 0) - rr
    lens = _cov(d, cv.k)
    _over(cv.px, lens * T.tint, T.tint_rgb)
    glare = _cov(np.abs(ax + ay * 0.8 + 0.03) - 0.025, cv.k)
    glare *= lens
    _lighten(cv.px, glare, 0.2)
    t = T.glass_t
    frame = _cov(np.abs(d) - t, cv.k)
    bar_y = np.abs(ay + T.glass_h * 0.35) - t * 0.8
    bridge = _cov(np.maximum(bar_y, np.abs(x) - (T.eye_x - T.glass_w) - 0.01), cv.k)
    arm = _cov(np.maximum(bar_y, np.maximum(T.glass_w - ax - 0.01, np.abs(x) - T.W * 0.97)), cv.k)
    np.maximum(frame, bridge, out=frame)
    np.maximum(frame, arm, out=frame)
    _over(cv.px, frame, T.frames)


def _mouth_geometry(cv: _Canvas) -> tuple[np.ndarray, ...]:
    """Shared by the mouth layers: x across the mouth in half-widths, y from the mouth centre,
    the mouth line (curving up at the corners when smiling) and the open height."""
    T = cv.T
    mx = cv.x / T.mouth_w
    mx2 = mx * mx
    my = cv.y - T.mouth_y
    mid = -T.smile_lift * mx2 + (0.012 + 0.025 * T.old) * (mx2 - 0.3) * (1 - T.smile)
    f = np.clip(1 - mx2, 0, None)
    return mx, mx2, my, mid, f


def _lips(cv: _Canvas) -> None:
    """Lips (natural or lipstick), a sheen on the lower one and the shadow beneath it."""
    T = cv.T
    mx, _mx2, my, mid, f = _mouth_geometry(cv)
    g = np.sqrt(f)
    opening = T.smile_open * f
    chin = _blob(cv.x, my - T.lip * 1.3 - 0.06 - T.smile_open, T.mouth_w * 0.8, 0.05)
    _shade(cv.px, chin, 0.18)
    bow = 0.85 + 0.25 * np.clip(np.abs(mx) * 4 - 0.3, 0, 1) * (1 - np.abs(mx))  # cupid's bow
    d = np.maximum(mid - T.lip * bow * g - my, my - mid - opening - T.lip * 1.25 * g)
    np.maximum(d, (np.abs(mx) - 1) * T.mouth_w, out=d)
    lips = _cov(d, cv.k)
    _over(cv.px, lips, T.lips)
    upper = lips * (my < mid)
    _shade(cv.px, upper, 0.18)
    _lighten(cv.px, _blob(cv.x, my - mid - T.lip * 0.55 - opening * 0.9, T.mouth_w * 0.45, T.lip * 0.35), 0.25)
    corners = _blob(np.abs(cv.x) - T.mouth_w - 0.01, my + T.smile_lift, 0.03, 0.03)
    _shade(cv.px, corners, 0.35)


def _smile(cv: _Canvas) -> None:
    """The open part of a smile: dark inside, upper teeth along the top."""
    T = cv.T
    mx, _mx2, my, mid, f = _mouth_geometry(cv)
    opening = T.smile_open * f
    d = np.maximum(mid - my, my - mid - opening)
    np.maximum(d, (np.abs(mx) - 0.95) * T.mouth_w, out=d)
    _over(cv.px, _cov(d, cv.k), (0.22, 0.06, 0.06))
    teeth = _cov(np.maximum(d, my - mid - opening * 0.55), cv.k)
    _over(cv.px, teeth, (0.96, 0.94, 0.88))


def _closed_mouth(cv: _Canvas) -> None:
    """The line between closed lips, deepest at the corners."""
    mx, mx2, my, mid, _f = _mouth_geometry(cv)
    d = np.abs(my - mid) - 0.008 - 0.006 * mx2
    np.maximum(d, (np.abs(mx) - 1.02) * cv.T.mouth_w, out=d)
    _shade(cv.px, _cov(d, cv.k), 0.6)


def _hat(cv: _Canvas) -> None:
    """A beanie, a cap with a visor, or a hat with a brim, over the top of the head."""
    T, x, y = cv.T, cv.x, cv.y
    brim_y = T.hairline + 0.02
    crown_w = T.W + 0.1 + T.volume * 0.5
    crown = _ellipse_d(x, y - brim_y, crown_w, brim_y + T.H + 0.22 + T.volume + 0.15 * (T.hat_style == BRIMMED))
    np.maximum(crown, y - brim_y, out=crown)
    a = _cov(crown, cv.k)
    shade = 0.8 + 0.25 * _blob(x - 0.3 * T.light, y - brim_y + 0.7, 0.8, 0.5) - 0.15 * (x / crown_w) ** 2
    _over(cv.px, a, [T.hat[c] * shade for c in range(3)])
    is_beanie, is_cap = (T.hat_style == BEANIE), (T.hat_style == CAP)
    # a beanie's folded cuff; a cap's visor; a brimmed hat's band and brim
    cuff = _cov(np.maximum(np.abs(y - brim_y + 0.08) - 0.08, np.abs(x) - crown_w * 0.99), cv.k)
    rib = 0.85 + 0.1 * np.sin(x * 80.0)
    _over(cv.px, cuff * is_beanie, [T.hat[c] * rib for c in range(3)])
    visor = _cov(_ellipse_d(x, y - brim_y - 0.02, crown_w * 0.9, 0.12), cv.k)
    _over(cv.px, visor * is_cap, [T.hat[c] * (0.7 - 0.25 * np.clip((y - brim_y) * 8, 0, 1)) for c in range(3)])
    band = _cov(np.maximum(np.abs(y - brim_y + 0.1) - 0.05, np.abs(x) - crown_w * 0.99), cv.k)
    is_brimmed = T.hat_style == BRIMMED
    _over(cv.px, band * is_brimmed, (0.1, 0.08, 0.07))
    brim = _cov(_ellipse_d(x, y - brim_y, crown_w * 1.55, 0.1), cv.k)
    _over(cv.px, brim * is_brimmed, [T.hat[c] * 0.75 for c in range(3)])


# ---------------------------------------------------------------------------------------------
# Putting it together.


# The smallest output side, and prepare's smallest --size. Below 64 pixels a face is painted at
# 64 or more and box-averaged down (_supersample), so 8 pixels is the same face, shrunk.
MIN_SIZE = 8


def _supersample(size: int) -> int:
    """How many times finer than the output the image is painted (features twice that again);
    from 64 pixels up, the analytic edge coverage alone keeps the large shapes smooth."""
    return max(1, -(-64 // size))


def _paint(img: np.ndarray, T: _Traits, p: FaceParams) -> None:
    """Paint a sub-batch of faces into img (3, B, N, N), back to front."""
    root = _Canvas.whole(img, T)

    def paint(layer, canvas: _Canvas | None, box=None, mask=None, factor: int = 1) -> None:
        # narrow to a window, then to the faces that have the feature, then refine; commit back
        if canvas is not None and box is not None:
            canvas = canvas.region(box)
        chain = []
        if canvas is not None and mask is not None:
            canvas = canvas.subset(np.asarray(mask, bool))
            chain.append(canvas)
        if canvas is not None and factor > 1:
            canvas = canvas.finer(box, factor)
            chain.append(canvas)
        if canvas is not None:
            layer(canvas)
            for c in reversed(chain):
                c.commit()

    hairy = ~np.asarray(p.bald, bool)
    old = ~np.asarray(p.young, bool)
    smiling = np.asarray(p.smiling, bool)
    hangs = hairy & (np.asarray(p.hair_style) != SHORT)
    paint(_background, root)
    # the hair's cap hides the top of the hair behind the head, so that starts lower
    paint(_hair_back, root, (-1.45, -0.1, 1.45, 2.5), hangs)
    paint(_neck, root, (-0.5, 0.2, 0.5, 2.5))
    paint(_clothes, root, (-2.2, 1.1, 2.2, 2.5))
    paint(_ears, root, (-1.0, -0.15, 1.0, 0.35))
    paint(_head, root, (-0.9, -1.1, 0.9, 1.1))
    paint(_beard, root, (-0.95, -0.3, 0.95, 1.25), T.beard_a[:, 0, 0] > 0)
    paint(_wrinkles, root, (-0.45, -0.75, 0.45, -0.25), old)
    # no hair hangs in front of the middle of the face, so that part is skipped
    paint(_hair_front, root, (-1.25, -1.35, 1.25, 0.05), hairy)
    paint(_hair_sides, root, (-1.25, 0.05, -0.5, 1.3), hairy)
    paint(_hair_sides, root, (0.5, 0.05, 1.25, 1.3), hairy)
    paint(_bald_fringe, root, (-1.0, -1.2, 1.0, 0.2), ~hairy)
    eyes = root.finer((-0.62, -0.42, 0.62, 0.2), 2)
    if eyes is not None:
        paint(_brows, eyes, (-0.62, -0.42, 0.62, -0.08))
        paint(_eyes, eyes, (-0.6, -0.25, 0.6, 0.18))
        paint(_eye_bags, eyes, (-0.62, -0.05, 0.62, 0.2), old)
        eyes.commit()
    paint(_glasses, root, (-0.9, -0.3, 0.9, 0.3), p.eyeglasses, 2)
    paint(_nose, root, (-0.25, -0.02, 0.25, 0.56), None, 2)
    lower = root.finer((-0.5, 0.25, 0.5, 1.05), 2)
    if lower is not None:
        paint(_cheek_folds, lower, (-0.5, 0.25, 0.5, 0.9), smiling | old)
        paint(_lips, lower, (-0.45, 0.4, 0.45, 1.05))
        paint(_smile, lower, (-0.42, 0.42, 0.42, 0.9), smiling)
        paint(_closed_mouth, lower, (-0.42, 0.42, 0.42, 0.9), ~smiling)
        lower.commit()
    paint(_hat, root, (-1.7, -1.8, 1.7, -0.3), p.wearing_hat)


def render(params: FaceParams, size: int = 64) -> np.ndarray:
    """Render faces as uint8 (B, size, size, 3)."""
    if size < MIN_SIZE:
        raise ValueError(f"size must be at least {MIN_SIZE}, got {size}")
    ss = _supersample(size)
    n = size * ss
    total = len(params)
    out = np.empty((total, size, size, 3), np.uint8)
    # sub-batches small enough that a layer's arrays stay in cache
    step = max(4, min(64, (64 * 64 * 64) // (n * n)))
    for start in range(0, total, step):
        p = params.take(slice(start, start + step))
        b = len(p)
        img = np.empty((3, b, n, n), np.float32)
        _paint(img, _traits(p), p)
        if ss > 1:
            img = img.reshape(3, b, size, ss, size, ss).mean(axis=(3, 5))
        img *= 255
        img += 0.5
        np.clip(img, 0, 255, out=img)
        out[start : start + b] = img.transpose(1, 2, 3, 0).astype(np.uint8)
    return out


def render_faces(seed: int, start: int, count: int, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Faces start..start+count-1 of set `seed`: (uint8 images (count,size,size,3), bool attributes (count,K))."""
    params = sample_params(seed, np.arange(start, start + count, dtype=np.int64))
    return render(params, size), attributes(params)
