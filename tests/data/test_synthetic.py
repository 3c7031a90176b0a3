"""The procedural face renderer: shapes, determinism, attribute rates and rules, and that every
attribute it reports can actually be seen in the picture."""

from __future__ import annotations

import dataclasses
import hashlib
import subprocess
import sys

import numpy as np
import pytest

from facegan.data import synthetic as S

# FaceParams field behind each boolean attribute (No_Beard is the negation of `beard`).
FLAG_FIELDS = {
    "Bald": "bald",
    "Bangs": "bangs",
    "Eyeglasses": "eyeglasses",
    "Male": "male",
    "No_Beard": "beard",
    "Pale_Skin": "pale_skin",
    "Smiling": "smiling",
    "Wearing_Hat": "wearing_hat",
    "Wearing_Lipstick": "lipstick",
    "Young": "young",
}
HAIR_COLOURS = {"Black_Hair": S.BLACK, "Brown_Hair": S.BROWN, "Blond_Hair": S.BLOND, "Gray_Hair": S.GRAY}


@pytest.fixture(scope="module")
def sheet() -> tuple[np.ndarray, np.ndarray]:
    """Faces 0..63 of set 0 at 64x64."""
    return S.render_faces(0, 0, 64, 64)


@pytest.fixture(scope="module")
def many_params() -> S.FaceParams:
    return S.sample_params(0, np.arange(4000))


def column(attrs: np.ndarray, name: str) -> np.ndarray:
    return attrs[:, S.ATTRIBUTE_NAMES.index(name)]


# ------------------------------------------------------------------ shapes and names


def test_attribute_names_are_celeba_spellings_with_targets() -> None:
    assert len(set(S.ATTRIBUTE_NAMES)) == len(S.ATTRIBUTE_NAMES)
    assert set(S.ATTRIBUTE_NAMES) == set(S.TARGET_RATES)
    required = {"Male", "Smiling", "Young", "Eyeglasses", "Pale_Skin", "Black_Hair", "Blond_Hair", "Wearing_Hat", "Bangs"}
    assert required <= set(S.ATTRIBUTE_NAMES)
    assert list(S.ATTRIBUTE_NAMES) == sorted(S.ATTRIBUTE_NAMES)  # CelebA's column order
    assert all(0 < rate < 1 for rate in S.TARGET_RATES.values())


@pytest.mark.parametrize("size", [32, 64, 128])
def test_shapes_dtypes_and_a_full_range_of_values(size: int) -> None:
    images, attrs = S.render_faces(3, 10, 6, size)
    assert images.shape == (6, size, size, 3) and images.dtype == np.uint8
    assert attrs.shape == (6, len(S.ATTRIBUTE_NAMES)) and attrs.dtype == np.bool_
    for image in images:
        assert int(image.max()) - int(image.min()) > 150
        assert image.std() > 20
        assert len(np.unique(image.reshape(-1, 3), axis=0)) > 200  # shaded, not flat fills


@pytest.mark.parametrize("size", [16, 48, 100])
def test_other_sizes_render(size: int) -> None:
    images, _ = S.render_faces(0, 0, 2, size)
    assert images.shape == (2, size, size, 3)
    assert images.std() > 20


def test_sizes_show_the_same_face() -> None:
    small = S.render_faces(0, 5, 1, 32)[0][0].astype(float)
    large = S.render_faces(0, 5, 1, 128)[0][0].astype(float)
    shrunk = large.reshape(32, 4, 32, 4, 3).mean(axis=(1, 3))
    assert np.abs(small - shrunk).mean() < 6


def test_too_small_a_size_is_refused() -> None:
    with pytest.raises(ValueError, match=rf"size must be at least {S.MIN_SIZE}, got {S.MIN_SIZE - 1}"):
        S.render(S.sample_params(0, np.arange(1)), S.MIN_SIZE - 1)


def test_empty_batch() -> None:
    images, attrs = S.render_faces(0, 0, 0, 64)
    assert images.shape == (0, 64, 64, 3) and attrs.shape == (0, len(S.ATTRIBUTE_NAMES))


# ------------------------------------------------------------------ determinism


def test_a_face_is_the_same_in_any_batch_or_chunk(sheet) -> None:
    images, attrs = sheet
    alone, alone_attrs = S.render_faces(0, 10, 1, 64)
    elsewhere, elsewhere_attrs = S.render_faces(0, 7, 20, 64)
    np.testing.assert_array_equal(alone[0], images[10])
    np.testing.assert_array_equal(elsewhere[3], images[10])
    np.testing.assert_array_equal(alone_attrs[0], attrs[10])
    np.testing.assert_array_equal(elsewhere_attrs[3], attrs[10])


def test_a_face_is_the_same_across_internal_sub_batches() -> None:
    long_run, _ = S.render_faces(0, 0, 150, 64)  # spans several internal sub-batches
    for index in (0, 63, 64, 100, 149):
        np.testing.assert_array_equal(S.render_faces(0, index, 1, 64)[0][0], long_run[index])


def test_parameters_depend_only_on_seed_and_index() -> None:
    forward = S.sample_params(5, np.array([3, 900, 12]))
    backward = S.sample_params(5, np.array([12, 900, 3]))
    for field in dataclasses.fields(S.FaceParams):
        np.testing.assert_array_equal(getattr(forward, field.name), getattr(backward, field.name)[::-1])


def test_faces_are_identical_in_another_process(sheet) -> None:
    images, attrs = sheet
    code = (
        "import hashlib; from facegan.data import synthetic as S; "
        "i, a = S.render_faces(0, 0, 64, 64); "
        "print(hashlib.sha256(i.tobytes() + a.tobytes()).hexdigest())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == hashlib.sha256(images.tobytes() + attrs.tobytes()).hexdigest()


def test_different_seeds_give_different_faces(sheet) -> None:
    other, _ = S.render_faces(1, 0, 64, 64)
    per_face = np.abs(other.astype(int) - sheet[0].astype(int)).mean(axis=(1, 2, 3))
    assert (per_face > 10).all()


# ------------------------------------------------------------------ attribute statistics


def test_marginal_rates_match_targets(many_params) -> None:
    rates = S.attributes(many_params).mean(axis=0)
    for name, rate in zip(S.ATTRIBUTE_NAMES, rates):
        assert abs(rate - S.TARGET_RATES[name]) < 0.03, (name, rate)


def test_attribute_rules_hold(many_params) -> None:
    a = S.attributes(many_params)
    hair = np.stack([column(a, name) for name in HAIR_COLOURS], axis=1)
    male, young, bald = column(a, "Male"), column(a, "Young"), column(a, "Bald")
    assert (hair.sum(axis=1) <= 1).all()  # hair colours exclude each other
    assert not (bald & hair.any(axis=1)).any()  # bald heads have no hair colour
    assert not (bald & column(a, "Bangs")).any()
    assert not (bald & ~male).any()
    assert not (bald & column(a, "Wearing_Hat")).any()  # a hat would hide baldness
    assert not (~column(a, "No_Beard") & ~male).any()  # beards only on men
    assert not (column(a, "Wearing_Lipstick") & male).any()  # lipstick only on women
    assert not (column(a, "Gray_Hair") & young).any()  # grey hair only with age


def test_sensible_correlations(many_params) -> None:
    p = many_params
    long_hair = p.hair_style == S.LONG
    assert long_hair[~p.male].mean() > long_hair[p.male].mean() + 0.3
    assert column(S.attributes(p), "Blond_Hair")[~p.male].mean() > 2 * column(S.attributes(p), "Blond_Hair")[p.male].mean()
    assert p.skin_tone[p.hair_color == S.BLOND].mean() > p.skin_tone[p.hair_color == S.BLACK].mean()
    assert p.eyeglasses[~p.young].mean() > p.eyeglasses[p.young].mean()


# Hand-built faces and the attributes each must report: (flags set, hair colour, attributes that hold).
# Every flag not named is False; No_Beard holds wherever beard is not set.
KNOWN_FACES = [
    ((), S.BLACK, {"Black_Hair", "No_Beard"}),
    (("male", "beard"), S.BROWN, {"Brown_Hair", "Male"}),
    (("bangs", "young"), S.BLOND, {"Blond_Hair", "Bangs", "Young", "No_Beard"}),
    (("eyeglasses", "smiling"), S.GRAY, {"Gray_Hair", "Eyeglasses", "Smiling", "No_Beard"}),
    (("pale_skin", "lipstick", "wearing_hat"), S.OTHER, {"Pale_Skin", "Wearing_Lipstick", "Wearing_Hat", "No_Beard"}),
    (("bald", "bangs", "male"), S.BLACK, {"Bald", "Male", "No_Beard"}),  # a bald head shows no hair colour, no bangs
    (("bald", "male", "beard", "young"), S.BLOND, {"Bald", "Male", "Young"}),
    (("bald", "male", "smiling"), S.BROWN, {"Bald", "Male", "Smiling", "No_Beard"}),
    (("bald", "male"), S.GRAY, {"Bald", "Male", "No_Beard"}),
]


def test_attributes_follow_the_parameters() -> None:
    base = S.sample_params(2, np.arange(len(KNOWN_FACES)))
    flags = {field: np.array([field in flags_on for flags_on, _, _ in KNOWN_FACES]) for field in FLAG_FIELDS.values()}
    params = dataclasses.replace(base, **flags, hair_color=np.array([hair for _, hair, _ in KNOWN_FACES]))
    a = S.attributes(params)
    for row, (flags_on, hair, expected) in enumerate(KNOWN_FACES):
        reported = {name for name, value in zip(S.ATTRIBUTE_NAMES, a[row]) if value}
        assert reported == expected, (flags_on, hair)


# ------------------------------------------------------------------ what the pictures show


def flipped(p: S.FaceParams, name: str) -> tuple[S.FaceParams, S.FaceParams, np.ndarray]:
    """(params without the attribute, params with it, faces where the flip is meaningful)."""
    if name in FLAG_FIELDS:
        field = FLAG_FIELDS[name]
        value = getattr(p, field)
        off = dataclasses.replace(p, **{field: np.zeros_like(value)})
        on = dataclasses.replace(p, **{field: np.ones_like(value)})
        if name == "No_Beard":
            off, on = on, off
        usable = np.ones(len(p), bool)
        if name == "Bangs":
            usable = ~p.bald
        if name == "Bald":
            usable = ~p.wearing_hat
        return off, on, usable
    others = np.full(len(p), S.OTHER)
    off = dataclasses.replace(p, hair_color=others)
    on = dataclasses.replace(p, hair_color=np.full(len(p), HAIR_COLOURS[name]))
    return off, on, ~p.bald


@pytest.mark.parametrize("name", S.ATTRIBUTE_NAMES)
def test_each_attribute_is_visible_on_its_own(name: str) -> None:
    p = S.sample_params(1, np.arange(48))
    off, on, usable = flipped(p, name)
    off, on = off.take(usable), on.take(usable)
    j = S.ATTRIBUTE_NAMES.index(name)
    assert not S.attributes(off)[:, j].any() and S.attributes(on)[:, j].all()
    changed = np.abs(S.render(on).astype(int) - S.render(off).astype(int)).max(axis=-1) > 15
    count = changed.sum(axis=(1, 2))  # pixels of a 64x64 face that visibly change
    # small features (a smile, lipstick) move a few dozen pixels; hair, hats, skin hundreds
    large = name.endswith("_Hair") or name in ("Bald", "Pale_Skin", "Wearing_Hat", "Male")
    floor = 200 if large else 20
    assert np.percentile(count, 10) >= floor, (name, np.percentile(count, 10))
    assert np.median(count) >= 1.5 * floor, (name, np.median(count))


def test_attribute_changes_land_where_expected() -> None:
    p = S.sample_params(4, np.arange(32))
    for name, rows in (("Wearing_Hat", slice(0, 24)), ("Smiling", slice(36, 56)), ("Eyeglasses", slice(20, 40))):
        off, on, _ = flipped(p, name)
        diff = np.abs(S.render(on).astype(int) - S.render(off).astype(int)).mean(axis=(0, 2, 3))
        inside = diff[rows].mean()
        assert inside > 3 * np.delete(diff, np.arange(64)[rows]).mean(), name


def test_pale_skin_is_very_light(sheet) -> None:
    p = S.sample_params(0, np.arange(64))
    pale = S.render(dataclasses.replace(p, pale_skin=np.ones(64, bool)))
    normal = S.render(dataclasses.replace(p, pale_skin=np.zeros(64, bool)))
    cheek = (slice(30, 36), slice(20, 26))  # left cheek, below the eye
    assert pale[:, cheek[0], cheek[1]].mean() > 190
    assert pale[:, cheek[0], cheek[1]].mean() > normal[:, cheek[0], cheek[1]].mean() + 40


def test_faces_vary(sheet) -> None:
    images = sheet[0].astype(np.int16)
    diffs = [np.abs(images[i] - images[j]).mean() for i in range(16) for j in range(i + 1, 16)]
    assert min(diffs) > 8 and np.mean(diffs) > 25
    centre = images[:, 20:48, 16:48].reshape(64, -1, 3).mean(axis=1)  # mostly the face: skin tones
    assert np.ptp(centre.mean(axis=1)) > 80


def test_faces_are_antialiased() -> None:
    """A face at 64x64 matches the same face drawn at 128x128 and box-averaged down, edges
    included: a point-sampled (aliased) render differs by whole colour steps along every edge."""
    p = S.sample_params(0, np.arange(16))
    direct = S.render(p, 64).astype(float)
    averaged = S.render(p, 128).astype(float).reshape(16, 64, 2, 64, 2, 3).mean(axis=(2, 4))
    diff = np.abs(direct - averaged).max(axis=-1)
    assert diff.mean() < 2.5
    assert np.percentile(diff, 99) < 25
