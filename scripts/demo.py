"""End-to-end demo on real data that ships with scikit-learn: train, export, score, report.

1. Train the classic MNIST-style dropout CNN on scikit-learn's handwritten digits (28x28).
2. ``mcd-export`` it to a self-contained MC dropout ONNX graph.
3. Write the held-out digits as PNG files in class folders (``images/0`` .. ``images/9``, so the
   label of each image is its class), out-of-distribution photographs (scikit-image's sample
   images) and noise in ``images/ood``, and two broken files in ``images/broken``.
4. ``mcd-score`` the folder into HDF5 and print the most and least uncertain images.
5. Write the report (``mcd-score report scores.h5 report.html --ood ood``) and, when Chromium and
   Playwright are installed, a screenshot of it (``report.png``).

Usage: python scripts/demo.py [--out demo-output] [--epochs 12] [--passes 50]
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
from digits import digit_images, dropout_cnn
from PIL import Image

SIZE = 28
TRAIN = 1400


def train(images: np.ndarray, labels: np.ndarray, epochs: int, path: Path) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    import keras

    keras.utils.set_random_seed(0)
    model = dropout_cnn(SIZE)
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    x = images[..., None].astype("float32") / 255.0
    model.fit(x, labels, epochs=epochs, batch_size=64, verbose=0, validation_split=0.1)
    loss, accuracy = model.evaluate(x, labels, verbose=0)
    print(f"trained the dropout CNN on {len(x)} digits: training accuracy {accuracy:.3f}")
    model.save(path)


def write_images(root: Path, images: np.ndarray, labels: np.ndarray) -> None:
    """Held-out digits in class folders 0..9, photographs and noise in ood/, broken files."""
    import skimage.data

    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        folder = root / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i:04d}.png")
    ood = root / "ood"
    ood.mkdir(parents=True, exist_ok=True)
    for name in ("astronaut", "camera", "coffee", "chelsea", "rocket", "coins", "moon", "page",
                 "text", "brick", "grass", "gravel", "hubble_deep_field", "immunohistochemistry"):
        Image.fromarray(getattr(skimage.data, name)()).save(ood / f"{name}.jpg", quality=90)
    rng = np.random.default_rng(0)
    for i in range(6):
        noise = rng.integers(0, 256, (SIZE * 4, SIZE * 4), dtype=np.uint8)
        Image.fromarray(noise).save(ood / f"noise_{i}.png")
    broken = root / "broken"
    broken.mkdir(parents=True, exist_ok=True)
    jpeg = (ood / "astronaut.jpg").read_bytes()
    (broken / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 3])
    (broken / "notes.txt").write_text("not an image\n")


def run(command: list[str]) -> int:
    print(f"\n$ {shlex.join(command)}", flush=True)
    return subprocess.run(command, check=False).returncode


def report(out: Path) -> None:
    """The most and least uncertain images, from the public reader (a pandas table)."""
    import scorer

    table = scorer.read_results(out)
    ok = table["status"] == "ok"
    is_digit = table["label"].isin([str(c) for c in range(10)]) & ok
    truth = table["label"].where(is_digit, "-1").astype(int)
    accuracy = (table["predicted_class"][is_digit] == truth[is_digit]).mean()
    print(f"\n{out}: {len(table)} rows, {int((~ok).sum())} failed")
    print(f"held-out digit accuracy (MC mean): {accuracy:.3f}")
    for name, rows in (("digits", is_digit), ("ood", (table["label"] == "ood") & ok)):
        print(f"  {name:6s} {int(rows.sum()):4d} images: mean mutual information "
              f"{table['mutual_information'][rows].mean():.4f}, mean predictive entropy "
              f"{table['predictive_entropy'][rows].mean():.4f}, mean confidence "
              f"{table['confidence'][rows].mean():.3f}")
    columns = ["path", "predicted_class", "confidence", "predictive_entropy", "mutual_information",
               "variation_ratio"]
    ranked = table[ok].sort_values("mutual_information", ascending=False)[columns]
    print("\nmost uncertain (highest mutual information):")
    print(ranked.head(8).to_string(index=False, float_format="%.4f"))
    print("\nleast uncertain:")
    print(ranked.tail(5).iloc[::-1].to_string(index=False, float_format="%.4f"))
    failed = table[~ok]
    print("\nfailed rows: " + ", ".join(f"{p} ({s})" for p, s in zip(failed["path"], failed["status"],
                                                                       strict=True)))


def next_steps(out: Path) -> None:
    print(f"""
Next:
  open {out / 'report.html'}     the report: distributions, calibration, OOD detection
  mcd-score table {out / 'scores.h5'} --where status=ok --sort mutual_information --top 10
  python -c "import scorer; print(scorer.read_results('{out / 'scores.h5'}'))"
  mcd-score your-images/ your.h5 --model {out / 'digits_cnn.onnx'}   # your own digit images
  mcd-export your_model.keras your_model.onnx                       # your own Keras model""")


def write_html_report(out: Path) -> None:
    """``mcd-score report`` through its library call, a JSON summary and a screenshot."""
    from report_screenshot import chromium_path, screenshot

    from scorer.report import ReportOptions, write_report

    html, png = out / "report.html", out / "report.png"
    print(f"\n$ mcd-score report {out / 'scores.h5'} {html} --ood ood "
          f"--json-summary {out / 'report.json'}")
    summary = write_report(out / "scores.h5", html,
                           ReportOptions(ood_labels=("ood",), json_summary=out / "report.json"))
    numbers = summary.numbers
    print(f"wrote {html}: accuracy {numbers['classification']['accuracy']:.3f}, ECE "
          f"{numbers['classification']['ece']:.4f}, AURC (MI) "
          f"{numbers['selective']['mutual_information']['aurc']:.4f}")
    print("digits vs OOD (photographs, noise), AUROC:", ", ".join(
        f"{name} {numbers['ood']['measures'][name]['auroc']:.3f}"
        for name in ("mutual_information", "predictive_entropy", "max_probability")))
    if chromium_path() is None:
        print("no Chromium (apt-get install chromium): skipped the screenshot")
        return
    try:
        errors = screenshot(html, png)
    except RuntimeError as err:
        print(f"skipped the screenshot: {err}")
        return
    print(f"wrote {png}" + (f" (console errors: {errors})" if errors else ""))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("demo-output"))
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--passes", type=int, default=50)
    args = parser.parse_args()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    bin_dir = Path(sys.executable).parent
    images, labels = digit_images(SIZE)
    train(images[:TRAIN], labels[:TRAIN], args.epochs, out / "digits_cnn.keras")
    write_images(out / "images", images[TRAIN:], labels[TRAIN:])
    code = run([str(bin_dir / "mcd-export"), str(out / "digits_cnn.keras"),
                str(out / "digits_cnn.onnx"), "--class-names", ",".join(map(str, range(10)))])
    if code != 0:
        return code
    code = run([str(bin_dir / "mcd-score"), str(out / "images"), str(out / "scores.h5"),
                "--model", str(out / "digits_cnn.onnx"), "--passes", str(args.passes),
                "--overwrite"])
    if code not in (0, 3):  # 3: finished, some files (the broken ones) could not be read
        return code
    report(out / "scores.h5")
    write_html_report(out)
    next_steps(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
