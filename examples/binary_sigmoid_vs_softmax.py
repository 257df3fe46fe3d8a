"""A binary classifier two ways, one sigmoid unit or two softmax units (the dogs-vs-cats recipe on
digits 3 vs 8), and the std of P(class) against P(class) for each.

    python examples/binary_sigmoid_vs_softmax.py [OUTPUT_FOLDER]
"""

import keras
import numpy as np
from data import digits, output_folder

import export
from scorer import plots

images, labels = digits()
chosen = np.isin(labels, (3, 8))
x, y = images[chosen][..., None] / 255.0, (labels[chosen] == 8).astype(int)
train, test = slice(0, 250), slice(250, None)
folder = output_folder()
for head, units, loss in (("sigmoid", 1, "binary_crossentropy"),
                          ("softmax", 2, "sparse_categorical_crossentropy")):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((28, 28, 1)), keras.layers.Conv2D(16, 3, activation="relu"),
        keras.layers.MaxPooling2D(), keras.layers.Flatten(), keras.layers.Dropout(0.5),
        keras.layers.Dense(units, activation=head)])
    model.compile("adam", loss)
    model.fit(x[train], y[train], epochs=6, batch_size=32, verbose=0)
    predictions = export.predict(model, x[test], passes=50, preprocessed=True, labels=y[test],
                                 export_options=export.ExportOptions(class_names=("3", "8")))
    accuracy = (predictions["predicted_class"] == y[test]).mean()
    print(f"{head}: accuracy {accuracy:.3f}, mean std of P(8) "
          f"{predictions['std'][:, 1].mean():.3f} over {predictions.rows} digits")
    plots.std_vs_probability(predictions).savefig(folder / f"binary_{head}_std_vs_p.png")
