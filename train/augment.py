"""Training augmentations, chosen by the recipe's `augment` field. All are stateless: their
randomness is a function of a seed tensor, so a run and its resumed twin see the same images.

- 'cifar' (sec. 4.2): zero-pad 4 pixels on each side, a random crop of the original size, a
  horizontal flip with probability 1/2. Works on whole batches (`cifar_batch`).
- 'flip': the horizontal flip alone (no crop), for short runs where crops slow learning.
- 'imagenet' (sec. 3.4): scale augmentation, the shorter side uniform in [256, 480], a random
  crop, a flip. Works on one image of any size (`imagenet_image`), before batching.
- 'random_resized_crop' (Szegedy et al. 2015, "Inception" crop; torchvision's and timm's
  `RandomResizedCrop` defaults): a random box of 8-100% of the image's area and aspect ratio
  3/4-4/3, resized to the view's size, then a flip. One image of any size (`random_resized_crop`).
- 'none'.
`erasing` (Zhong et al. 2020, random erasing) optionally follows 'cifar': each image loses one
random rectangle to zeros with that probability.

`AUGMENTATIONS` names them all (recipes validate against it); `PER_IMAGE` are those that need
the raw image of any size, so their split streams from disk instead of being held at the view's
size (`augment_image` applies one). TensorFlow is imported where used: `train.recipes`, pure
data, imports this module's names without it.
"""

AUGMENTATIONS = ("cifar", "flip", "imagenet", "random_resized_crop", "none")
PER_IMAGE = ("imagenet", "random_resized_crop")


def _split(seed, n):
    import tensorflow as tf

    return tf.unstack(tf.random.experimental.stateless_split(seed, n))


def cifar_batch(images, seed, pad=4):
    """Pad-crop-flip of a batch: (B, H, W, C) any dtype -> the same shape and dtype; each image
    gets its own crop offset and flip, drawn from `seed` (int tensor (2,))."""
    import tensorflow as tf

    s_y, s_x, s_flip = _split(seed, 3)
    shape = tf.shape(images)
    b, h, w = shape[0], images.shape[1], images.shape[2]
    dy = tf.random.stateless_uniform([b], s_y, 0, 2 * pad + 1, tf.int32)
    dx = tf.random.stateless_uniform([b], s_x, 0, 2 * pad + 1, tf.int32)
    flip = tf.random.stateless_uniform([b], s_flip) < 0.5
    padded = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
    rows = dy[:, None] + tf.range(h)[None]
    cols = dx[:, None] + tf.range(w)[None]
    cols = tf.where(flip[:, None], tf.reverse(cols, axis=[1]), cols)
    x = tf.gather(padded, rows, axis=1, batch_dims=1)
    return tf.gather(x, cols, axis=2, batch_dims=1)


def erase_batch(images, seed, probability, area=(0.02, 0.25), aspect=(0.3, 3.3)):
    """Random erasing: with `probability`, each image's random rectangle (`area` of the image,
    aspect ratio in `aspect`, log-uniform) is set to 0. (B, H, W, C) -> same."""
    import tensorflow as tf

    s_p, s_a, s_r, s_y, s_x = _split(seed, 5)
    b, h, w = tf.shape(images)[0], images.shape[1], images.shape[2]
    on = tf.random.stateless_uniform([b], s_p) < probability
    frac = tf.random.stateless_uniform([b], s_a, area[0], area[1])
    log_r = tf.random.stateless_uniform([b], s_r, tf.math.log(aspect[0]), tf.math.log(aspect[1]))
    eh = tf.clip_by_value(tf.round(tf.sqrt(frac * h * w * tf.exp(log_r))), 1, h)
    ew = tf.clip_by_value(tf.round(tf.sqrt(frac * h * w / tf.exp(log_r))), 1, w)
    top = tf.floor(tf.random.stateless_uniform([b], s_y) * (h - eh + 1))
    left = tf.floor(tf.random.stateless_uniform([b], s_x) * (w - ew + 1))
    ys = tf.range(h, dtype=tf.float32)[None, :, None]
    xs = tf.range(w, dtype=tf.float32)[None, None, :]
    inside = ((ys >= top[:, None, None]) & (ys < (top + eh)[:, None, None])
              & (xs >= left[:, None, None]) & (xs < (left + ew)[:, None, None]))
    mask = inside & on[:, None, None]
    return tf.where(mask[..., None], tf.zeros_like(images), images)


def imagenet_image(image, seed, size=(224, 224), scale=(256, 480)):
    """Scale augmentation of one image (h, w, C) of any size: shorter side uniform in `scale`,
    a random `size` crop, a flip. float32 (H, W, C); the paper's color augmentation is not
    applied."""
    import tensorflow as tf

    from train import views

    h, w = size
    s = _split(seed, 3)
    shorter = tf.random.stateless_uniform([], s[0], minval=scale[0], maxval=scale[1] + 1,
                                          dtype=tf.int32)
    image = views.resize_shorter_side(image, tf.maximum(shorter, max(h, w)))
    channels = image.shape[-1] if image.shape[-1] is not None else tf.shape(image)[-1]
    image = tf.image.stateless_random_crop(image, [h, w, channels], seed=s[1])
    return tf.image.stateless_random_flip_left_right(image, seed=s[2])


def random_resized_crop(image, seed, size=(224, 224), area=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """Random-resized crop and flip of one image (h, w, C) of any size: a box of `area` of the
    image (uniform) and aspect ratio `ratio` (log-uniform), drawn from `seed` (int tensor (2,))
    as `tf.image.stateless_sample_distorted_bounding_box` draws it (10 tries, else the whole
    image), resized to `size` (bilinear, antialiased, rounded to whole pixel values as the
    evaluation view's resize), flipped with probability 1/2. float32 (H, W, C) in [0, 255]."""
    import tensorflow as tf

    s_box, s_flip = _split(seed, 2)
    shape = tf.shape(image)
    begin, box_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        shape, tf.zeros([1, 0, 4], tf.float32), seed=s_box, min_object_covered=0.0,
        aspect_ratio_range=ratio, area_range=area, max_attempts=10,
        use_image_if_no_bounding_boxes=True)
    crop = tf.slice(image, begin, box_size)
    x = tf.image.resize(tf.cast(crop, tf.float32), size, antialias=True)
    x = tf.clip_by_value(tf.round(x), 0.0, 255.0)
    return tf.image.stateless_random_flip_left_right(x, seed=s_flip)


def augment_image(augment, image, seed, view):
    """The per-image augmentation `augment` (one of PER_IMAGE) of a raw uint8 image (h, w, C)
    for `view` (a `train.views.View`): float32 (view.height, view.width, C) before the view's
    padding. `seed`: int tensor (2,), e.g. folded in from the element's index."""
    size = (view.height, view.width)
    if augment == "imagenet":
        return imagenet_image(image, seed, size=size)
    if augment == "random_resized_crop":
        return random_resized_crop(image, seed, size=size)
    raise ValueError(f"augment {augment!r} is not a per-image augmentation {PER_IMAGE}.")
