"""The head-only phase's learning rate on ResNet-18 features (issue 21): a linear head trained
on cached `avg_pool` features (the evaluation view, no augmentation) as the finetune recipe's
head phase trains it (Nesterov SGD momentum 0.9, label smoothing 0.1, batch 32, rate per 256
images), at several rates.

    python results/photos-to-phone/head_lr.py SOURCE.keras TREE  # TREE/{train,test}/<class>/
"""

import sys

from train import strategies

strategies.make_deterministic(False)  # before TensorFlow's runtime starts

import keras  # noqa: E402

from train import data, pipeline, recipes, views  # noqa: E402
from train import model as model_lib  # noqa: E402

RATES = (0.5, 0.2, 0.1, 0.05, 0.02, 0.005)


def features(weights, root):
    """{split: (avg_pool features (N, 512), labels (N,))} of the fine-tuning model's backbone."""
    recipe = recipes.resolve("finetune", model="resnet18", weights=weights, image_size=224,
                             dataset=f"folder:{root}")
    out, extractor = {}, None
    for split in ("train", "test"):
        ds, info = data.load(recipe.dataset, split)
        view = views.for_recipe(info, recipe)
        if extractor is None:
            model = model_lib.build_model(recipe, view, None, info.num_classes).model
            extractor = keras.Model(model.input, model.get_layer("avg_pool").output)
        x, y = pipeline.eval_arrays(pipeline.prepare(ds, info, view, "none"), batch_size=50)
        out[split] = (extractor.predict(x, batch_size=50, verbose=0), y)
    return out, info.num_classes


def head_run(feats, classes, rate, epochs):
    """(final train loss, test accuracy) of a linear head trained at `rate` per 256 images."""
    (x, y), (tx, ty) = feats["train"], feats["test"]
    keras.utils.set_random_seed(0)
    head = keras.Sequential([keras.Input((x.shape[1],)), keras.layers.Dense(
        classes, kernel_regularizer=keras.regularizers.L2(5e-5))])  # weight decay 1e-4
    head.compile(keras.optimizers.SGD(rate * 32 / 256, momentum=0.9, nesterov=True),
                 keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1),
                 metrics=["accuracy"])
    history = head.fit(x, keras.utils.to_categorical(y, classes), batch_size=32, epochs=epochs,
                       verbose=0, shuffle=True)
    _, accuracy = head.evaluate(tx, keras.utils.to_categorical(ty, classes), verbose=0)
    return history.history["loss"][-1], accuracy


def main(weights, root):
    feats, classes = features(weights, root)
    x = feats["train"][0]
    print(f"features: {x.shape[1]}, squared norm {float((x ** 2).sum(1).mean()):.0f} on average")
    print("| epochs | rate per 256 | final train loss | test accuracy |\n|---|---|---|---|")
    for epochs in (2, 8):
        for rate in RATES:
            loss, accuracy = head_run(feats, classes, rate, epochs)
            print(f"| {epochs} | {rate} | {loss:.3f} | {accuracy:.1%} |")


if __name__ == "__main__":
    main(*sys.argv[1:3])
