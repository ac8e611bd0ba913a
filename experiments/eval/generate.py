"""Generate text from a preset (random weights) or a trained run.

    python -m experiments.eval.generate --preset small_gemma3 --prompt "def main(" --max-new-tokens 32
    python -m experiments.eval.generate --checkpoint results/<sweep>/<hash> --prompt "def " --temperature 0.8

With ``--preset`` the model is randomly initialised and the prompt is encoded byte by byte (each
UTF-8 byte mod the vocabulary): the output is noise, useful for checking the decode path and its
speed. With ``--checkpoint`` the run's model and SentencePiece tokenizer are loaded through
``experiments.train.load_trained``.
"""

import argparse
import time

import jax

import arch
from experiments.eval.sampling import sample
from experiments.train import load_trained


def byte_encode(text: str, vocab_size: int) -> list[int]:
    return [b % vocab_size for b in text.encode("utf-8")]


def byte_decode(ids) -> str:
    return bytes(int(i) for i in ids if 0 <= int(i) < 256).decode("utf-8", errors="replace")


def load(args):
    """``(model, encode, decode, note)`` for the chosen source."""
    if args.checkpoint:

        model, tok, _ = load_trained(args.checkpoint)
        return model, tok.encode, tok.decode, f"trained run {args.checkpoint}"
    cfg = arch.preset(args.preset)
    if not cfg.causal:
        raise SystemExit(f"preset {args.preset!r} is a bidirectional encoder: it cannot generate")
    model = arch.LM(cfg, key=jax.random.key(args.seed))
    note = (f"preset {args.preset} with RANDOM weights (seed {args.seed}) and byte-level tokens "
            f"(UTF-8 bytes mod {cfg.vocab_size}): the output is noise")
    return model, lambda s: byte_encode(s, cfg.vocab_size), byte_decode, note


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--preset", choices=[n for n, c in arch.PRESETS.items() if c.causal])
    src.add_argument("--checkpoint", help="a run directory (results/<sweep>/<hash>)")
    p.add_argument("--prompt", required=True)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.0, help="0: greedy")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--stop-token", type=int, default=None, help="token id that ends generation")
    p.add_argument("--seed", type=int, default=0, help="weights (--preset) and sampling key")
    args = p.parse_args(argv)

    model, encode, decode, note = load(args)
    prompt = encode(args.prompt)
    if not prompt:
        raise SystemExit("the prompt encodes to no tokens")
    print(f"# {note}")
    t0 = time.perf_counter()
    ids = sample(model, prompt, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                 top_k=args.top_k, top_p=args.top_p, stop_token=args.stop_token,
                 key=jax.random.key(args.seed))
    dt = time.perf_counter() - t0
    print(f"# {len(prompt)} prompt tokens, {len(ids)} new tokens in {dt:.2f} s (compile included)")
    print(f"# ids: {ids.tolist()}")
    print(args.prompt + decode(ids))


if __name__ == "__main__":
    main()
