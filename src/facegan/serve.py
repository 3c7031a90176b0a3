"""A local demo page for a trained generator: FastAPI on uvicorn (`pip install -e '.[serve]'`).

`facegan serve RUN|MODEL` loads the generator once and serves one page (PAGE, a string in this
file) and a few GET endpoints that answer PNG:

    /api/face.png?seed=7&truncation=0.7[&c=1,0,...]   one face
    /api/mix.png?a=3&b=17&t=0.5&truncation=1          the slerp between two seeds' latents at t
    /api/grid.png?seed=0&n=16&truncation=1             n faces of consecutive latents of one seed
    /api/info                                          latent size, resolution, condition names, limits

What a request can do is bounded: numbers are parsed and range-checked (a bad one is a 400 with
one sentence), a grid holds at most MAX_GRID faces, each client (by address) gets RATE requests a
second with bursts of BURST (then 429), and nothing from a request reaches a file path or eval;
there are no uploads. Endpoints are plain `def`s, which FastAPI runs in its thread pool, so a slow
generation never blocks the event loop; one lock keeps one generation at a time, so a burst of
requests queues instead of oversubscribing the CPU.
"""

from __future__ import annotations

import io
import json
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from facegan import viz
from facegan.errors import FaceganError
from facegan.generation import generate, latents, load_generator, truncate

MAX_GRID = 16  # images in one request
MAX_SEED = 2**31 - 1
RATE = 20.0  # requests a second per client, on average
BURST = 40  # requests a client may make at once before the rate applies
MAX_CLIENTS = 4096  # addresses remembered by the rate limiter (the oldest is forgotten first)


class Model:
    """A generator loaded once: a torch G (run, checkpoint, .safetensors) or an ONNX session (.onnx)."""

    def __init__(self, source: str | os.PathLike, device: str = "cpu") -> None:
        path = Path(source)
        self.lock = threading.Lock()
        if path.suffix.lower() == ".onnx":
            from facegan.onnx_sample import open_onnx

            self.session, metadata = open_onnx(path)
            self.latent_dim = int(metadata["latent_dim"])
            self.resolution = int(metadata.get("resolution", 64))
            self.conditions = json.loads(metadata.get("conditions", "[]"))
            self.generator = None
        else:
            self.generator, config = load_generator(path, device)
            self.session = None
            self.latent_dim, self.resolution = config.latent_dim, config.resolution
            self.conditions = list(getattr(config, "condition", None) or [])

    def latent(self, seed: int, count: int = 1) -> torch.Tensor:
        """The latents of a seed, as `facegan sample --seed` draws them (NumPy's for an .onnx file)."""
        if self.session is not None:
            from facegan.onnx_sample import onnx_latents

            return torch.from_numpy(onnx_latents(count, self.latent_dim, seed))
        return latents(count, self.latent_dim, seed)

    def images(self, z: torch.Tensor, c: list[float] | None = None) -> np.ndarray:
        """uint8 (N, H, W, 3) faces of latents z (N, D), one generation at a time."""
        labels = None if not self.conditions else torch.tensor([c or [0.0] * len(self.conditions)] * len(z))
        with self.lock:
            if self.session is not None:
                from facegan.onnx_sample import generate_onnx

                return generate_onnx(self.session, {"conditions": json.dumps(self.conditions)}, z.numpy(),
                                     None if labels is None else labels.numpy())
            device = next(self.generator.parameters()).device
            return generate(self.generator, z.to(device), labels=None if labels is None else labels.to(device))


@dataclass
class RateLimiter:
    """A token bucket per client address: `rate` a second, bursts of `burst`."""

    rate: float = RATE
    burst: int = BURST
    buckets: OrderedDict = field(default_factory=OrderedDict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def allow(self, client: str) -> bool:
        """Whether `client` may make a request now (and count it)."""
        now = time.monotonic()
        with self.lock:
            tokens, then = self.buckets.pop(client, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - then) * self.rate)
            allowed = tokens >= 1.0
            self.buckets[client] = (tokens - 1.0 if allowed else tokens, now)
            while len(self.buckets) > MAX_CLIENTS:
                self.buckets.popitem(last=False)
            return allowed


def _png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def create_app(model: Model, *, rate: float = RATE, burst: int = BURST):
    """The FastAPI application serving `model`: the page, PNG endpoints, 400s for bad input, 429s past the rate."""
    try:
        from fastapi import FastAPI, Query, Request
        from fastapi.exceptions import RequestValidationError
        from fastapi.responses import HTMLResponse, JSONResponse, Response
    except ImportError:
        raise FaceganError("the demo page needs FastAPI and uvicorn; install them with `pip install -e '.[serve]'`.") from None
    from facegan.explore import slerp

    app = FastAPI(title="facegan", docs_url=None, redoc_url=None, openapi_url=None)
    limiter = RateLimiter(rate, burst)

    @app.middleware("http")
    async def limit_rate(request: Request, call_next):
        client = request.client.host if request.client else "unknown"
        if not limiter.allow(client):
            return JSONResponse({"error": f"too many requests; at most {rate:g} a second, try again shortly."},
                                status_code=429, headers={"Retry-After": "1"})
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def bad_parameters(request: Request, error: RequestValidationError):
        first = error.errors()[0] if error.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ())[1:]) or "a parameter"
        return JSONResponse({"error": f"{where}: {first.get('msg', 'is not valid')}."}, status_code=400)

    @app.exception_handler(ValueError)
    async def bad_value(request: Request, error: ValueError):
        return JSONResponse({"error": str(error)}, status_code=400)

    def conditions(c: str | None) -> list[float] | None:
        if not c:
            return None
        try:
            values = [float(part) for part in c.split(",")]
        except ValueError:
            raise ValueError("c must be comma-separated numbers, one per attribute.") from None
        if len(values) != len(model.conditions) or not all(0.0 <= v <= 1.0 for v in values):
            raise ValueError(f"c must hold {len(model.conditions)} numbers from 0 to 1, one per attribute "
                             f"({', '.join(model.conditions) or 'this run has none'}).")
        return values

    seed_q = Query(0, ge=0, le=MAX_SEED)
    psi_q = Query(1.0, ge=0.0, le=1.0)
    png = {"media_type": "image/png", "headers": {"Cache-Control": "no-store"}}

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return PAGE

    @app.get("/api/info")
    def info() -> dict:
        return {"latent_dim": model.latent_dim, "resolution": model.resolution, "conditions": model.conditions,
                "max_grid": MAX_GRID, "max_seed": MAX_SEED, "rate_per_s": rate}

    @app.get("/api/face.png")
    def face(seed: int = seed_q, truncation: float = psi_q, c: str | None = Query(None, max_length=2000)) -> Response:
        z = truncate(model.latent(seed), truncation)
        return Response(_png(model.images(z, conditions(c))[0]), **png)

    @app.get("/api/mix.png")
    def mix(a: int = seed_q, b: int = Query(1, ge=0, le=MAX_SEED), t: float = Query(0.5, ge=0.0, le=1.0),
            truncation: float = psi_q, c: str | None = Query(None, max_length=2000)) -> Response:
        z = slerp(model.latent(a)[0], model.latent(b)[0], torch.tensor([t]))
        return Response(_png(model.images(truncate(z, truncation), conditions(c))[0]), **png)

    @app.get("/api/grid.png")
    def grid(seed: int = seed_q, n: int = Query(16, ge=1, le=MAX_GRID), truncation: float = psi_q,
             c: str | None = Query(None, max_length=2000)) -> Response:
        images = model.images(truncate(model.latent(seed, n), truncation), conditions(c))
        return Response(_png(viz.make_grid(images)), **png)

    return app


def serve(source: str | os.PathLike, *, host: str = "127.0.0.1", port: int = 8000, device: str = "cpu") -> None:
    """Load the generator once and serve the demo page until Ctrl-C."""
    try:
        import uvicorn
    except ImportError:
        raise FaceganError("the demo page needs FastAPI and uvicorn; install them with `pip install -e '.[serve]'`.") from None
    if not 0 < port < 65536:
        raise FaceganError(f"--port must be from 1 to 65535, not {port}.")
    app = create_app(Model(source, device))
    shown = f"[{host}]" if ":" in host else host
    print(f"facegan: serving {source} at http://{shown}:{port}/  (Ctrl-C stops)", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>facegan</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body { font-family: system-ui, sans-serif; margin: 2rem; max-width: 46rem; color: #222; }
 img { width: 256px; height: 256px; image-rendering: pixelated; border: 1px solid #ccc; }
 fieldset { border: 1px solid #ddd; margin: 0 0 1rem; } label { margin-right: 1rem; }
 input[type=number] { width: 7rem; } #error { color: #b00; min-height: 1.2em; }
</style></head>
<body>
<h1>facegan</h1>
<div><img id="face" alt="a generated face"></div>
<p id="error"></p>
<fieldset><legend>Face</legend>
 <label>seed <input id="seed" type="number" min="0" value="0"></label>
 <button id="random">random</button>
 <label>truncation <input id="truncation" type="range" min="0" max="1" step="0.05" value="1">
  <span id="psi">1.00</span></label>
</fieldset>
<fieldset><legend>Between two seeds</legend>
 <label><input id="walk" type="checkbox"> walk to seed <input id="seed_b" type="number" min="0" value="1"></label>
 <label><input id="t" type="range" min="0" max="1" step="0.05" value="0.5"> <span id="tv">0.50</span></label>
</fieldset>
<fieldset id="attributes" hidden><legend>Attributes</legend></fieldset>
<p><a id="download" download="face.png" href="#">download PNG</a></p>
<script>
const $ = (id) => document.getElementById(id);
let conditions = [];
function url() {
  const q = new URLSearchParams({truncation: $("truncation").value});
  if (conditions.length) q.set("c", conditions.map((n, i) => $("attr" + i).checked ? 1 : 0).join(","));
  if ($("walk").checked) {
    q.set("a", $("seed").value); q.set("b", $("seed_b").value); q.set("t", $("t").value);
    return "/api/mix.png?" + q;
  }
  q.set("seed", $("seed").value);
  return "/api/face.png?" + q;
}
async function draw() {
  $("psi").textContent = Number($("truncation").value).toFixed(2);
  $("tv").textContent = Number($("t").value).toFixed(2);
  const response = await fetch(url());
  if (!response.ok) { $("error").textContent = (await response.json()).error; return; }
  $("error").textContent = "";
  const blob = URL.createObjectURL(await response.blob());
  $("face").src = blob; $("download").href = blob;
  $("download").download = "face-" + $("seed").value + ".png";
}
$("random").onclick = () => { $("seed").value = Math.floor(Math.random() * 1000000); draw(); };
for (const id of ["seed", "seed_b", "truncation", "t", "walk"]) $(id).addEventListener("input", draw);
fetch("/api/info").then((r) => r.json()).then((info) => {
  conditions = info.conditions;
  conditions.forEach((name, i) => {
    const label = document.createElement("label");
    label.innerHTML = '<input type="checkbox" id="attr' + i + '"> ';
    label.append(name);
    $("attributes").append(label);
    $("attr" + i).addEventListener("input", draw);
  });
  $("attributes").hidden = !conditions.length;
  draw();
});
</script>
</body></html>
"""
