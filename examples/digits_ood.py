"""In-distribution digits, digits blended with noise (0.3 x + 0.7 noise) and photographs: does the
uncertainty tell them apart? Normalized entropy and mutual information per group, the images on
either side of a threshold, and the most and least uncertain images.

    python examples/digits_ood.py [OUTPUT_FOLDER]
"""

import keras
import numpy as np
from data import digits, output_folder, photographs

import export
from scorer import plots

images, labels = digits()
keras.utils.set_random_seed(0)
layers = keras.layers
model = keras.Sequential([
    keras.Input((28, 28, 1)), layers.Conv2D(32, 3, activation="relu"), layers.MaxPooling2D(),
    layers.Dropout(0.25), layers.Flatten(), layers.Dense(128, activation="relu"),
    layers.Dropout(0.5), layers.Dense(10, activation="softmax")])
model.compile("adam", "sparse_categorical_crossentropy")
model.fit(images[:1400, ..., None] / 255.0, labels[:1400], epochs=6, batch_size=64, verbose=0)

rng = np.random.default_rng(0)
held_out = images[1400:]
noise = rng.integers(0, 256, (1000, 28, 28))
blended = (0.3 * images[rng.integers(0, 1400, 1000)] + 0.7 * noise).astype(np.uint8)
photos = photographs(200)
groups = {"digits": held_out, "noisy": blended, "photos": photos}
every = np.concatenate(list(groups.values()))
group_labels = ([str(d) for d in labels[1400:]] + ["noisy"] * len(blended)
                + ["photos"] * len(photos))
predictions = export.predict(model, every, passes=50, labels=group_labels)

start = 0
for name, members in groups.items():
    rows = slice(start, start + len(members))
    start += len(members)
    print(f"{name:7s} {len(members):5d} images: normalized entropy "
          f"{predictions['normalized_entropy'][rows].mean():.3f}, mutual information "
          f"{predictions['mutual_information'][rows].mean():.3f}")
split = plots.threshold_split(predictions, "normalized_entropy", 0.5)
print(f"digits with normalized entropy >= 0.5: {split.flagged}, accuracy "
      f"{split.accuracy_flagged if split.accuracy_flagged is not None else float('nan'):.3f}; "
      f"below: accuracy {split.accuracy_rest:.3f}")
folder = output_folder()
for measure in ("normalized_entropy", "mutual_information"):
    plots.histogram(predictions, measure, ood_labels=("noisy", "photos")) \
        .savefig(folder / f"ood_{measure}.png")
plots.image_grid(every, predictions, "mutual_information", 8).savefig(folder / "ood_most.png")
plots.image_grid(every, predictions, "mutual_information", 8, most=False) \
    .savefig(folder / "ood_least.png")
