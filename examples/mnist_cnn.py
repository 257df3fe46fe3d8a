"""The Keras-2-era MNIST CNN (two convolutions, max pooling, dropout 0.25 and 0.5), scored with
``predict`` on arrays: accuracy, calibration, and how accuracy rises as uncertain images are
set aside.

    python examples/mnist_cnn.py [OUTPUT_FOLDER]
"""

import keras
from data import digits, output_folder

import export
from scorer import plots

images, labels = digits()
keras.utils.set_random_seed(0)
layers = keras.layers
model = keras.Sequential([
    keras.Input((28, 28, 1)),
    layers.Conv2D(32, 3, activation="relu"), layers.Conv2D(64, 3, activation="relu"),
    layers.MaxPooling2D(), layers.Dropout(0.25), layers.Flatten(),
    layers.Dense(128, activation="relu"), layers.Dropout(0.5),
    layers.Dense(10, activation="softmax"),
])
model.compile("adam", "sparse_categorical_crossentropy")
model.fit(images[:1400, ..., None] / 255.0, labels[:1400], epochs=4, batch_size=64, verbose=0)

# pixels 0..255, preprocessed as the export recorded (x / 255), as files would be
predictions = export.predict(model, images[1400:], passes=50, labels=labels[1400:])
accuracy = (predictions["predicted_class"] == labels[1400:]).mean()
print(f"held-out accuracy of the MC mean: {accuracy:.3f} on {predictions.rows} digits")
split = plots.threshold_split(predictions, "mutual_information", 0.1)
print(f"mutual information >= 0.1: {split.flagged} images, accuracy {split.accuracy_flagged:.3f}; "
      f"below: {predictions.rows - split.flagged} images, accuracy {split.accuracy_rest:.3f}")
folder = output_folder()
plots.reliability(predictions).savefig(folder / "mnist_reliability.png")
plots.rejection(predictions).savefig(folder / "mnist_rejection.png")
