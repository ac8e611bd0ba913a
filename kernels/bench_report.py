"""Fills the results section of ``kernels/BENCHMARKS.md`` from what the device check wrote.

    python -m gemma_kernels.bench_report OUT [--doc kernels/BENCHMARKS.md]

``OUT`` is the folder of ``scripts/device_check.sh``: ``bench.json`` (required; from
``python -m gemma_kernels.bench --out``) and, when present, ``env.json``, ``steps.json``,
``kernel_tests.json`` and ``decode.json``. The block between the markers ``<!-- results:DEVICE begin``
and ``<!-- results:DEVICE end -->`` (DEVICE is the bench's ``gpu``, ``tpu`` or ``cpu``) is replaced
whole, so every number in it comes from the JSON of one run, with the card, driver, jax and jaxlib
versions and the date it was measured: nothing is copied by hand.
"""

import argparse
import json
import re
from pathlib import Path

from gemma_kernels.bench import Row, table

DOC = Path(__file__).with_name("BENCHMARKS.md")


def _load(folder: Path, name: str) -> dict | None:
    path = folder / name
    return json.loads(path.read_text()) if path.exists() else None


def _header(meta: dict, env: dict | None) -> str:
    env = env or {}
    get = lambda key: meta.get(key) or env.get(key)  # noqa: E731  (older bench JSON lacks some keys)
    driver = f", driver {get('driver')}" if get("driver") else ""
    tokamax = f"tokamax {get('tokamax')}" if get("tokamax") else "tokamax not installed"
    shapes = "`--quick` shapes" if meta.get("quick") else "full shapes"
    return (f"**{meta['device_kind']}** ({meta['device']}{driver}); jax {get('jax')}, "
            f"jaxlib {get('jaxlib')}, python {get('python')}; {tokamax}; {shapes}; measured {get('date')}.")


def _steps(steps: dict) -> list[str]:
    lines = ["| step | exit code | seconds | limit (s) |", "|---|---|---|---|"]
    lines += [f"| {s['name']} | {s['rc']} | {s['seconds']} | {s['limit']} |" for s in steps["steps"]]
    return lines


def _tests(tests: dict) -> str:
    if "collected" in tests:
        return (f"Kernel tests marked `gpu`: {len(tests['collected'])} collected (run interpreted by CI on "
                f"CPU; compiled on a device).")
    if "tests" not in tests:
        return f"Kernel tests: exit code {tests['exit_code']}, no report ({tests.get('report_error')})."
    text = (f"Kernel tests marked `gpu`, compiled: {tests['passed']} passed, {tests['failures']} failed, "
            f"{tests['errors']} errors, {tests['skipped']} skipped.")
    return "\n".join([text, *(f"- {f['kind']}: `{f['test']}`: {f['message']}" for f in tests["failed"])])


def _decode(decode: dict) -> list[str]:
    contexts = decode["contexts"]
    head = "| model | pattern | " + " | ".join(f"{c // 1024}K ms" if c >= 1024 else f"{c} ms"
                                              for c in contexts) + " | ratio last/first |"
    lines = [f"Decode, batch 1, {decode['dtype']} weights and cache, random weights, fastest of "
             f"{decode['rounds']} steps (wall-clock) on {decode['device']}:", "", head,
             "|---|---|" + "---|" * (len(contexts) + 1)]
    for label, m in decode["models"].items():
        ms = " | ".join(f"{1e3 * s:.2f}" for s in m["wall_s"])
        lines.append(f"| {label} | {m['pattern']} | {ms} | {m['wall_s'][-1] / m['wall_s'][0]:.2f} |")
    return lines


def render(folder: Path) -> tuple[str, str]:
    """``(device, markdown)``: the results block for the run in ``folder``."""
    bench = _load(folder, "bench.json")
    if bench is None:
        raise FileNotFoundError(f"{folder / 'bench.json'}: no bench JSON there (run scripts/device_check.sh "
                                f"or python -m gemma_kernels.bench --out)")
    meta = bench["meta"]
    rows = [Row(**r) for r in bench["rows"]]
    lines = [_header(meta, _load(folder, "env.json")), ""]
    if (steps := _load(folder, "steps.json")) is not None:
        lines += _steps(steps) + [""]
    if (tests := _load(folder, "kernel_tests.json")) is not None:
        lines += [_tests(tests), ""]
    if meta["device"] == "cpu":
        lines += ["Pallas rows on CPU run in interpret mode: they check that the kernels execute and are "
                  "not speed numbers.", ""]
    if not bench.get("complete", True):
        lines += ["Incomplete: the bench stopped (its time box) before measuring every shape.", ""]
    lines += ["```", table(rows), "```", ""]
    if bench.get("targets"):
        lines += ["Targets:", "", *(f"- {t}" for t in bench["targets"]), ""]
    elif meta["device"] == "gpu":
        lines += ["Targets: none could be evaluated (a baseline or the Pallas row is missing).", ""]
    if meta.get("omitted"):
        lines += ["Peers left out:", "", *(f"- {k}: {v}" for k, v in meta["omitted"].items()), ""]
    if (decode := _load(folder, "decode.json")) is not None:
        lines += _decode(decode) + [""]
    return meta["device"], "\n".join(lines).rstrip() + "\n"


def fill(doc: Path, device: str, block: str) -> None:
    """Replace the text between ``device``'s markers in ``doc``, keeping the markers."""
    text = doc.read_text()
    begin, end = rf"<!-- results:{device} begin[^\n]*-->\n", rf"<!-- results:{device} end -->"
    pattern = re.compile(rf"({begin})(.*?)({end})", re.S)
    if len(pattern.findall(text)) != 1:
        raise ValueError(f"{doc}: expected one pair of markers '<!-- results:{device} begin ... -->' and "
                         f"'<!-- results:{device} end -->' (device is one of gpu, tpu, cpu)")
    doc.write_text(pattern.sub(lambda m: m.group(1) + "\n" + block + "\n" + m.group(3), text))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path, help="the device check's folder (holds bench.json)")
    p.add_argument("--doc", type=Path, default=DOC, help="the Markdown file to fill (default: %(default)s)")
    args = p.parse_args(argv)
    device, block = render(args.out)
    fill(args.doc, device, block)
    print(f"filled the {device} results of {args.doc} from {args.out}")


if __name__ == "__main__":
    main()
