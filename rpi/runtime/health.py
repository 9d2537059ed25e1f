"""``python -m rpi.runtime.health``: the known-answer test of a release, run on the Pi after it is switched in.

The export stage records a few test images in the model's metadata JSON (``known_answers``: model-sized
uint8 pixels and the label the exported model gives each). This module classifies them with the release's
own interpreter, through the same preprocessing a camera frame takes, and checks that every label is the
recorded one. It prints one line for people and one ``RPI-JSON`` line for the fleet report.

Exit status: 0 when every image gets its recorded label, 1 when one does not, 2 when the model or its
known answers cannot be read. Pi side: numpy and a TFLite interpreter only.
"""
from __future__ import annotations

import argparse
import base64
import json
import time

import numpy as np

from contract import run_cli

from .errors import RpiError
from .model import load_classifier

JSON_PREFIX = "RPI-JSON "


def read_known_answers(meta) -> list:
    """[(frame, expected label, test index)] from the metadata's ``known_answers``."""
    try:
        answers = json.loads(meta.json_path.read_text()).get("known_answers")
    except (OSError, ValueError) as exc:
        raise RpiError(f"cannot read {meta.json_path}: {exc}") from None
    if not isinstance(answers, dict) or not answers.get("images"):
        raise RpiError(f"{meta.json_path.name} records no known answers: re-export the model (make export)")
    if answers.get("layout") != "HWC" or answers.get("dtype") != "uint8":
        raise RpiError(f"{meta.json_path.name}: known answers in layout {answers.get('layout')!r} "
                       f"{answers.get('dtype')!r}; this runtime reads HWC uint8")
    shape = (meta.height, meta.width, meta.channels)
    cases = []
    for entry in answers["images"]:
        try:
            pixels = np.frombuffer(base64.b64decode(entry["pixels"], validate=True), np.uint8)
            cases.append((pixels.reshape(shape), str(entry["label"]), entry.get("test_index")))
        except (KeyError, ValueError, TypeError) as exc:
            raise RpiError(f"{meta.json_path.name}: a known answer is malformed ({exc})") from None
    return cases


def known_answer_test(model: str, runtime: str = "auto") -> dict:
    classifier = load_classifier(model, runtime=runtime)
    order = "rgb"  # the export stores RGB (or gray) pixels
    results, latencies = [], []
    for frame, expected, test_index in read_known_answers(classifier.meta):
        started = time.perf_counter()
        got = classifier.classify(frame, order)
        latencies.append((time.perf_counter() - started) * 1000.0)
        results.append({"test_index": test_index, "expected": expected, "got": got.label,
                        "score": round(got.score, 6)})
    wrong = [r for r in results if r["got"] != r["expected"]]
    return {"known_answers": len(results), "passed": len(results) - len(wrong), "wrong": wrong,
            "backend": classifier.backend, "mean_latency_ms": round(float(np.mean(latencies)), 3)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m rpi.runtime.health", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="the release's model directory or metadata JSON")
    p.add_argument("--runtime", default="auto", help="TFLite interpreter, as rpi.runtime.app --runtime (default auto)")
    args = p.parse_args(argv)
    outcome = known_answer_test(args.model, args.runtime)
    verdict = "ok" if not outcome["wrong"] else "FAILED"
    detail = "".join(f"; test image {w['test_index']}: {w['got']} instead of {w['expected']}" for w in outcome["wrong"][:3])
    print(f"known answers {verdict}: {outcome['passed']}/{outcome['known_answers']} images get their recorded "
          f"label with {outcome['backend']} ({outcome['mean_latency_ms']:.3f} ms per image){detail}", flush=True)
    print(JSON_PREFIX + json.dumps(outcome), flush=True)
    return 0 if not outcome["wrong"] else 1


def cli() -> None:
    run_cli(main)


if __name__ == "__main__":
    cli()
