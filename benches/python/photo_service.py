"""A careful Python visual-search service, the comparison point of the photo serving benchmark.

It serves what hetvis-serve serves, with the tools a Python team would pick: PIL with JPEG draft mode (the
decoder scales by 1/2, 1/4 or 1/8 in the DCT domain to the smallest size still covering the model's input),
EXIF orientation applied, a centre square crop and one antialiased resize, ONNX Runtime for the same ONNX
models, and hnswlib over the same gallery vectors with the same HNSW parameters. FastAPI on uvicorn; the
handler is a plain function, so it runs in the thread pool and PIL and ONNX Runtime release the GIL.

    POST /search?k=10[&mode=paragon]   body: the image bytes (any image/* content type)
    GET  /healthz

Started by `photo-serve` (benches/src/bin/photo-serve.rs) with the models and vectors it generated:

    python photo_service.py --query-model Q.onnx --gallery-model G.onnx --vectors V.npy --ids I.json \
        --m 16 --ef-construction 200 --ef 64 --port 0
"""

import argparse
import io
import json
import socket
import time

import hnswlib
import numpy as np
import onnxruntime as ort
import uvicorn
from fastapi import FastAPI, HTTPException, Request
from PIL import Image, ImageOps


class Model:
    """An ONNX model with the preprocessing its hetvis manifest (`model.json` beside it) declares."""

    def __init__(self, path, threads):
        with open(path[: -len(".onnx")] + ".json") as f:
            manifest = json.load(f)
        p = manifest["preprocessing"]
        self.size = p["size"]
        self.mean = np.array(p["mean"], dtype=np.float32).reshape(-1, 1, 1)
        self.std = np.array(p["std"], dtype=np.float32).reshape(-1, 1, 1)
        self.name = manifest["name"]
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def preprocess(self, data):
        img = Image.open(io.BytesIO(data))
        # Draft mode: the JPEG decoder picks the smallest DCT scale whose result still covers the request.
        img.draft("RGB", (self.size, self.size))
        img = ImageOps.exif_transpose(img).convert("RGB")
        w, h = img.size
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        img = img.resize((self.size, self.size), Image.BILINEAR, box=(left, top, left + side, top + side))
        x = np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / 255.0
        return ((x - self.mean) / self.std)[None]

    def embed(self, x):
        return self.session.run(None, {self.input: x})[0][0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--query-model", required=True)
    ap.add_argument("--gallery-model")
    ap.add_argument("--vectors", required=True, help="float32 [N, dim] .npy, unit rows")
    ap.add_argument("--ids", required=True, help="JSON list of N ids")
    ap.add_argument("--m", type=int, default=16)
    ap.add_argument("--ef-construction", type=int, default=200)
    ap.add_argument("--ef", type=int, default=64)
    ap.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: its choice)")
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()

    models = {"query": Model(args.query_model, args.threads)}
    if args.gallery_model:
        models["paragon"] = Model(args.gallery_model, args.threads)
    vectors = np.load(args.vectors)
    with open(args.ids) as f:
        ids = json.load(f)
    t = time.time()
    index = hnswlib.Index(space="ip", dim=vectors.shape[1])
    index.init_index(max_elements=len(vectors), M=args.m, ef_construction=args.ef_construction)
    index.add_items(vectors, np.arange(len(vectors)))
    index.set_ef(args.ef)
    print(f"hnswlib index of {len(vectors)} vectors built in {time.time() - t:.1f} s", flush=True)

    app = FastAPI()

    @app.get("/healthz")
    def healthz():
        return {"status": "ok"}

    @app.post("/search")
    def search(request: Request, k: int = 10, mode: str = "query"):
        model = models.get(mode)
        if model is None:
            raise HTTPException(400, f"no model for mode {mode!r}")
        started = time.perf_counter()
        # The body is read on the event loop by the framework; the handler body runs in the thread pool.
        data = request.state.body
        try:
            x = model.preprocess(data)
        except Exception as e:  # PIL raises many types for bad input
            raise HTTPException(400, f"cannot decode the image: {e}")
        decoded = time.perf_counter()
        q = model.embed(x)
        q = q / max(float(np.linalg.norm(q)), 1e-12)
        embedded = time.perf_counter()
        labels, dist = index.knn_query(q[None], k=min(k, len(ids)))
        done = time.perf_counter()
        return {
            "results": [{"id": ids[int(i)], "score": float(1.0 - d)} for i, d in zip(labels[0], dist[0])],
            "mode": mode,
            "timings_ms": {
                "decode": (decoded - started) * 1e3,
                "embed": (embedded - decoded) * 1e3,
                "search": (done - embedded) * 1e3,
                "total": (done - started) * 1e3,
            },
        }

    @app.middleware("http")
    async def read_body(request: Request, call_next):
        request.state.body = await request.body()
        return await call_next(request)

    # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY only on sockets that say they are TCP, and without it
    # Nagle's algorithm holds the response body until the client's delayed ACK (40 ms) on keep-alive connections.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    sock.listen(1024)
    print(f"listening on http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    config = uvicorn.Config(app, log_level="warning", access_log=False)
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
