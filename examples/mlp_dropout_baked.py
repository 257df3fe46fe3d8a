"""The MLP of the classic recipe, with ``Dropout(0.5)(x, training=True)`` baked into the model.

The usual way to keep dropout on at inference is to build the model with ``training=True`` on
its dropout layers and call ``model.predict(x)`` T times. mcd-score exports that model as it is
(the baked dropout layers are its Monte Carlo sites) and scores all T passes in one call.

    python examples/mlp_dropout_baked.py [OUTPUT_FOLDER]
"""

import keras
from data import digits, output_folder

import export
from scorer import plots

images, labels = digits()
x = images.reshape(len(images), -1) / 255.0  # the seeds' flat, preprocessed input
keras.utils.set_random_seed(0)
inputs = keras.Input((784,))
hidden = keras.layers.Dense(256, activation="relu")(inputs)
hidden = keras.layers.Dropout(0.5)(hidden, training=True)
hidden = keras.layers.Dense(128, activation="relu")(hidden)
hidden = keras.layers.Dropout(0.5)(hidden, training=True)
model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(hidden))
model.compile("adam", "sparse_categorical_crossentropy")
model.fit(x[:1400], labels[:1400], epochs=15, batch_size=64, verbose=0)

held_out, truth = x[1400:], labels[1400:]
predictions = export.predict(model, held_out, passes=50, preprocessed=True, labels=truth)
correct = predictions["predicted_class"] == truth
print(f"held-out accuracy of the MC mean: {correct.mean():.3f} on {len(truth)} digits")
print(f"mutual information: {predictions['mutual_information'][correct].mean():.3f} nats when "
      f"right, {predictions['mutual_information'][~correct].mean():.3f} when wrong")
plots.std_vs_probability(predictions).savefig(output_folder() / "mlp_std_vs_probability.png")
