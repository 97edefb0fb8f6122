"""Sample text from an rnngen model exported to ONNX, with only numpy and onnxruntime.

    rnngen export shakespeare --format onnx -o shakespeare.onnx
    python examples/onnx_sample.py shakespeare.onnx -n 300 -p "ROMEO:" -t 0.8 -s 1
    python examples/onnx_sample.py styles.onnx --tag python -n 300     # a model trained on TAG=PATH sources

Everything needed is inside the .onnx file: the vocabulary, the tags and the state shapes are in its
metadata under the key "rnngen". The model is one step: (tokens[B], h[, c]) -> (logits[B, V], h[, c]);
a tagged model takes tags[B] (each row's index into the metadata's "tags") after the tokens.
"""

import argparse
import json
import sys

import numpy as np
import onnxruntime as ort


def main() -> None:
    parser = argparse.ArgumentParser(description="Sample text from an exported rnngen text model.")
    parser.add_argument("model", help="the .onnx file written by `rnngen export --format onnx`")
    parser.add_argument("-n", "--length", type=int, default=500, help="characters to generate")
    parser.add_argument("-p", "--prime", default="", help="text to start from")
    parser.add_argument("-t", "--temperature", type=float, default=0.8, help="0 is greedy")
    parser.add_argument("-s", "--seed", type=int, default=None)
    parser.add_argument("--tag", help="the style to generate, for a model trained with tags (default: its first)")
    args = parser.parse_args()

    session = ort.InferenceSession(args.model, providers=["CPUExecutionProvider"])
    meta = json.loads(session.get_modelmeta().custom_metadata_map["rnngen"])
    if meta["kind"] != "text":
        sys.exit(f"{args.model} is a {meta['kind']} model; this example samples text models")
    chars = meta["codec"]["chars"]
    index = {ch: i for i, ch in enumerate(chars)}
    layers, hidden = meta["model"]["layers"], meta["model"]["hidden"]
    state_names = [name for name in meta["inputs"] if name not in ("tokens", "tags")]
    state = {name: np.zeros((layers, 1, hidden), dtype=np.float32) for name in state_names}
    tags = meta.get("tags", [])
    if args.tag is not None and args.tag not in tags:
        sys.exit(f"unknown tag {args.tag!r}; this model's tags are: {', '.join(tags) or 'none'}")
    tag = {"tags": np.array([tags.index(args.tag or tags[0])], dtype=np.int64)} if tags else {}

    unknown = sorted(set(args.prime) - index.keys())
    if unknown:
        sys.exit(f"the prime has characters the model never saw: {unknown}")
    prime = args.prime or "\n"  # with no prime, start after a newline, as rnngen does
    rng = np.random.default_rng(args.seed)

    def step(token: int) -> np.ndarray:
        outputs = session.run(None, {"tokens": np.array([token], dtype=np.int64), **tag, **state})
        for name, value in zip(state_names, outputs[1:]):
            state[name] = value
        return outputs[0][0]  # (V,)

    for ch in prime:
        logits = step(index[ch])
    out = [args.prime]
    for _ in range(args.length):
        if args.temperature == 0:
            token = int(np.argmax(logits))
        else:
            z = (logits - logits.max()) / args.temperature
            p = np.exp(z)
            token = int(rng.choice(len(p), p=p / p.sum()))
        out.append(chars[token])
        logits = step(token)
    print("".join(out))


if __name__ == "__main__":
    main()
