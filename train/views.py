"""The evaluation view: how a raw image becomes the model's input, defined once.

A `View` is data (it is written into metadata and reports); `apply` is the one function that
implements it. Training's evaluation, export's verification, the SavedModel's serving function
and the TFLite metadata all use the same `View`, so they cannot drift apart.

    view = views.for_recipe(info, recipe)        # the run's view (for_dataset or the weights')
    x = views.apply(images_uint8, view)          # float32 (B, H, W, C) in [0, 255]

Steps, on uint8 images (h, w, C) or batches (B, h, w, C):
1. 'stretch': resize to the inner size (H - 2 pad, W - 2 pad) unless the image has it already;
   'center_crop': resize the shorter side to `resize_shorter`, take the central (H, W) crop
   (single-crop testing, sec. 3.4). Resizing is bilinear with antialiasing, then rounded to
   whole pixel values, as an app's image resizer delivers them.
2. Zero-pad `pad` pixels on each side (Fashion-MNIST's 28x28 -> 32x32, so the CIFAR network
   and its pad-4 crops apply unchanged).
3. float32, pixel units: the normalization is inside the model.

Also here: the paper's other test-time views, `ten_crop` and `multi_scale` (sec. 3.4).
"""

import dataclasses

import tensorflow as tf

from train import augment as augment_lib

RESIZES = ("stretch", "center_crop")


@dataclasses.dataclass(frozen=True)
class View:
    """What the model sees: an (height, width, channels) float32 image in pixel units [0, 255],
    made from a raw uint8 image by resize mode `resize` and `pad` zero pixels on each side."""

    height: int
    width: int
    channels: int
    resize: str = "stretch"
    pad: int = 0
    resize_shorter: int | None = None

    def __post_init__(self):
        if self.resize not in RESIZES:
            raise ValueError(f"View resize {self.resize!r} is not one of {RESIZES}.")
        if min(self.height, self.width) - 2 * self.pad < 1 or self.pad < 0:
            raise ValueError(f"View pad {self.pad} leaves no image inside {self.height}x"
                             f"{self.width}.")
        if self.resize == "center_crop" and not self.resize_shorter:
            object.__setattr__(self, "resize_shorter", round(min(self.height, self.width)
                                                             * 256 / 224))

    @property
    def shape(self) -> tuple:
        """The model's input shape (H, W, C)."""
        return (self.height, self.width, self.channels)

    @property
    def inner_size(self) -> tuple:
        """(h, w) of the image before padding: what a camera frame is resized to."""
        return (self.height - 2 * self.pad, self.width - 2 * self.pad)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "View":
        return cls(**{f.name: values[f.name] for f in dataclasses.fields(cls) if f.name in values})


DEFAULT_CROP_FRACTION = 224 / 256  # ResNet's 256 -> 224 (sec. 3.4), torchvision's default


def for_recipe(info, recipe) -> View:
    """The one view of a run: training's evaluation, export's verification, the SavedModel
    and the TFLite metadata all take it from here.

    weights='none': `for_dataset(info, recipe.image_size, recipe.augment)`, its centre crop
    (crop-trained augmentations) by `recipe.crop_fraction` when one is set. Pretrained weights
    (`train.model.pretrained_weights`): the weight set's input size unless `recipe.image_size`
    (224 when the set does not say), resized and centre-cropped by `recipe.crop_fraction`, else
    the set's, else 224/256, at the dataset's channels.
    """
    if recipe.weights == "none":
        view = for_dataset(info, recipe.image_size, recipe.augment)
        if recipe.crop_fraction and view.resize == "center_crop":
            view = _center_crop(view.height, view.width, view.channels, recipe.crop_fraction)
        return view
    from train import model as model_lib  # keras_resnet: only runs with weights need it

    pretrained = model_lib.pretrained_weights(recipe)
    size = recipe.image_size or pretrained.input_size or 224
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    crop = recipe.crop_fraction or pretrained.crop_fraction or DEFAULT_CROP_FRACTION
    return _center_crop(h, w, info.image_shape[2], crop)


def _center_crop(h, w, channels, crop_fraction) -> View:
    """Resize the shorter side to min(h, w) / crop_fraction, then the central (h, w)."""
    return View(h, w, channels, "center_crop",
                resize_shorter=max(min(h, w), round(min(h, w) / crop_fraction)))


def for_dataset(info, image_size=None, augment: str = "cifar") -> View:
    """The view of a recipe without pretrained weights: dataset `info` (a
    `train.data.DatasetInfo`), the recipe's `image_size` (None, int or (h, w)) and `augment`
    ('imagenet' and 'random_resized_crop' evaluate on a center crop).

    None keeps a fixed-size dataset's own size plus its padding; images of varying size need
    an `image_size` (--image_size=N on the command line).
    """
    h, w, c = info.image_shape
    crop = augment in augment_lib.PER_IMAGE or info.crop_view  # trained on crops: eval on one
    if image_size is None:
        if h is not None and w is not None and not crop:
            return View(h + 2 * info.pad, w + 2 * info.pad, c, "stretch", info.pad)
        if not crop:
            raise ValueError(
                f"{info.name} images have no single size ({info.describe_sizes()}): pass "
                "--image_size=N (or the recipe field image_size) for the size to train at, "
                "e.g. --image_size=64.")
        image_size = 224
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    return View(size[0], size[1], c, "center_crop" if crop else "stretch")


# ---------------------------------------------------------------------------- the steps


def _round_pixels(x):
    return tf.clip_by_value(tf.round(x), 0.0, 255.0)


def resize(images, view: View):
    """Step 1 of the view: uint8 (..., h, w, C) -> float32 (..., ih, iw, C) whole pixel values
    at the inner size (or the center crop)."""
    x = tf.cast(images, tf.float32)
    if view.resize == "center_crop":
        hw = tf.cast(tf.shape(x)[-3:-1], tf.float32)
        scale = float(view.resize_shorter) / tf.reduce_min(hw)
        new = tf.maximum(tf.cast(tf.round(hw * scale), tf.int32), max(view.height, view.width))
        x = _round_pixels(tf.image.resize(x, new, antialias=True))
        top, left = (new[0] - view.height) // 2, (new[1] - view.width) // 2
        x = x[..., top:top + view.height, left:left + view.width, :]
        return tf.ensure_shape(x, [None] * (x.shape.rank - 3) + list(view.shape))
    inner = view.inner_size
    static = tuple(x.shape[-3:-1])
    if static == inner:
        return x
    if None not in static:
        return _round_pixels(tf.image.resize(x, inner, antialias=True))
    same = tf.reduce_all(tf.equal(tf.shape(x)[-3:-1], inner))
    x = tf.cond(same, lambda: x,
                lambda: _round_pixels(tf.image.resize(x, inner, antialias=True)))
    return tf.ensure_shape(x, [None] * (x.shape.rank - 3) + list(inner) + [view.channels])


def region(height: int, width: int, view: View) -> tuple:
    """The part of a height x width image that `resize` keeps, as (top, left, bottom, right)
    in [0, 1]: the centre crop, or the whole image (a phone runtime's region of interest)."""
    if view.resize != "center_crop":
        return (0.0, 0.0, 1.0, 1.0)
    scale = view.resize_shorter / min(height, width)
    new_h = max(round(height * scale), view.height, view.width)
    new_w = max(round(width * scale), view.height, view.width)
    top, left = (new_h - view.height) // 2, (new_w - view.width) // 2
    return (top / new_h, left / new_w, (top + view.height) / new_h, (left + view.width) / new_w)


def finish(x, view: View):
    """Steps 2-3 of the view: float32 or uint8 (..., ih, iw, C) at the inner size -> float32
    (..., H, W, C), zero-padded."""
    x = tf.cast(x, tf.float32)
    if view.pad:
        p = view.pad
        x = tf.pad(x, [[0, 0]] * (x.shape.rank - 3) + [[p, p], [p, p], [0, 0]])
    return x


def apply(images, view: View):
    """The whole view: uint8 images (h, w, C) or (B, h, w, C) of any size -> float32 model input
    (H, W, C) or (B, H, W, C) in pixel units."""
    return finish(resize(images, view), view)


# --------------------------------------------------------- the paper's other test views


def resize_shorter_side(image, shorter):
    """Resizes (H, W, C) so that min(H, W) == shorter, keeping the aspect; float32 out."""
    hw = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = tf.cast(shorter, tf.float32) / tf.reduce_min(hw)
    new_hw = tf.maximum(tf.cast(tf.round(hw * scale), tf.int32), tf.cast(shorter, tf.int32))
    return tf.image.resize(tf.cast(image, tf.float32), new_hw, antialias=True)


def ten_crop(image, size=224, resize_shorter=256):
    """10-crop testing (sec. 3.4, from AlexNet): the 4 corner crops and the center crop of the
    resized image, then the same 5 flipped. float32 (10, h, w, C)."""
    h, w = (size, size) if isinstance(size, int) else size
    image = resize_shorter_side(image, resize_shorter) if resize_shorter else \
        tf.cast(image, tf.float32)
    shape = tf.shape(image)
    bottom, right = shape[0] - h, shape[1] - w
    offsets = [(0, 0), (0, right), (bottom, 0), (bottom, right), (bottom // 2, right // 2)]
    crops = tf.stack([image[t:t + h, l:l + w] for t, l in offsets])
    crops = tf.concat([crops, tf.reverse(crops, axis=[2])], axis=0)
    return tf.ensure_shape(crops, [10, h, w, image.shape[-1]])


def multi_scale(image, scales=(224, 256, 384, 480, 640)):
    """Fully-convolutional multi-scale views (sec. 3.4): one float32 image per scale, resized so
    that its shorter side equals the scale. Returns a list of (H_s, W_s, C)."""
    return [resize_shorter_side(image, s) for s in scales]
