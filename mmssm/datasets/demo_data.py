"""A small generated dataset in the layouts of ADE20K, COCO and ImageNet, deterministic from a seed.

``make_demo_data()`` draws scenes of four object classes on textured backgrounds and writes them where the task
packages' own dataset classes look for them::

    <root>/ade/ADEChallengeData2016/images/{training,validation}/ADE_{train,val}_00000001.jpg
    <root>/ade/ADEChallengeData2016/annotations/{training,validation}/ADE_{train,val}_00000001.png
    <root>/coco/{train2017,val2017}/000000000001.jpg
    <root>/coco/annotations/instances_{train2017,val2017}.json
    <root>/imagenet/{train,val}/<class>/<class>_00001.jpg
    <root>/imagenet/meta/{train,val}.txt                        ("disc/disc_00001.jpg 0", ImageNet's format)

The objects (``DEMO_OBJECT_CLASSES``) differ both in shape and in colour: disc (red), ring (yellow), square (green),
triangle (blue), each with a random hue, saturation and brightness inside its class's range, random size, position
and rotation, some shading and noise; in the seg and det scenes 2 to 5 of them overlap and occlude each other (each
keeps at least 40% of its area visible). The backgrounds are random mixtures of smooth noise, stripes, gradients and
checkerboards in weakly saturated colours of any hue, drawn independently of the objects: a class is told by its
colour and shape, never by the background. The class order is alphabetical, so that it is the same in the three
layouts (MMPretrain's ``CustomDataset`` sorts class folders by name).

Label conventions:

- seg (ADE20K's): the PNG holds 0 = "other"/unlabelled, 1 = background texture, 2..5 = disc, ring, square,
  triangle. Label 0 is a thin band (up to 1 pixel) just outside each object's edge, where the anti-aliased edge mixes
  object and background colours, like ADE20K's unlabelled pixels. ``LoadAnnotations(reduce_zero_label=True)`` turns
  it into 255 (ignored) and 1..5 into 0..4, the indices of ``DEMO_CLASSES`` (background first).
- det (COCO's): categories 1..4 = ``DEMO_OBJECT_CLASSES``; an annotation's mask is the object's visible part. A fully
  visible disc, square or triangle is a polygon taken from its geometry (the disc as a 48-gon); a ring (it has a
  hole) and any occluded object is an uncompressed RLE (``{'size': [h, w], 'counts': [...]}``, column-major). bbox
  (xywh) and area are those of the visible mask; iscrowd is 0. MMDetection's ``LoadAnnotations(with_mask=True)``
  reads both forms with its default ``poly2mask=True``.
- cls: one dominant object per image (sometimes with a small object of another class partly behind it); label =
  index in ``DEMO_OBJECT_CLASSES``.

Which dataset class reads what: MMDetection's ``CocoDataset`` with ``metainfo=DEMO_METAINFO['det']`` and
MMPretrain's ``CustomDataset`` / ``ImageNet`` (``metainfo=DEMO_METAINFO['cls']``) take the demo classes directly.
MMSegmentation's ``ADE20KDataset`` reads the layout as it is, but only with its own 150 class names: given other
class names in ``metainfo`` it raises ``ValueError`` (it accepts only a subset of ADE20K's names and then remaps
label ids). So a config that wants the demo's class names uses ``BaseSegDataset`` -- the class ``ADE20KDataset``
derives from, with the same loading code -- with ADE20K's settings (``img_suffix='.jpg'``,
``seg_map_suffix='.png'``, ``reduce_zero_label=True``) and ``metainfo=DEMO_METAINFO['seg']``;
``demo_dataset_cfg()`` writes these dataset configs.

Determinism: every image comes from its own ``numpy.random.Generator`` seeded by (seed, task, split, index), so the
same seed gives byte-identical files (JPEGs by Pillow's libjpeg at quality 95 without chroma subsampling, which is
deterministic for one libjpeg build; labels are PNG), and changing a count does not change the images before it.
"""
import colorsys
import json
import os
import os.path as osp
import shutil
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from PIL import Image

__all__ = [
    'DEMO_OBJECT_CLASSES', 'DEMO_CLASSES', 'DEMO_PALETTE', 'DEMO_DET_CLASSES', 'DEMO_DET_PALETTE', 'DEMO_CLS_CLASSES',
    'DEMO_METAINFO', 'make_demo_data', 'demo_dataset_cfg'
]

#: The object classes, in the order of their indices in every layout (alphabetical, as MMPretrain's folder scan).
DEMO_OBJECT_CLASSES = ('disc', 'ring', 'square', 'triangle')
#: Semantic segmentation classes after ``reduce_zero_label`` (index 0 is the background texture).
DEMO_CLASSES = ('background', ) + DEMO_OBJECT_CLASSES
#: Colours to draw the segmentation classes with (RGB), near each object class's own colour.
DEMO_PALETTE = ((128, 128, 128), (220, 40, 40), (235, 200, 30), (40, 170, 60), (40, 90, 220))
DEMO_DET_CLASSES = DEMO_OBJECT_CLASSES
DEMO_DET_PALETTE = DEMO_PALETTE[1:]
DEMO_CLS_CLASSES = DEMO_OBJECT_CLASSES
#: ``metainfo`` for each task's dataset config.
DEMO_METAINFO = {
    'seg': dict(classes=DEMO_CLASSES, palette=DEMO_PALETTE),
    'det': dict(classes=DEMO_DET_CLASSES, palette=DEMO_DET_PALETTE),
    'cls': dict(classes=DEMO_CLS_CLASSES),
}

TASKS = ('seg', 'det', 'cls')
DEFAULT_IMAGE_SIZE = {'seg': 128, 'det': 128, 'cls': 64}
DEFAULT_NUM_TRAIN = {'seg': 200, 'det': 200, 'cls': 100}  # cls: images per class
DEFAULT_NUM_VAL = {'seg': 40, 'det': 40, 'cls': 20}
#: Smallest image side per task: below it the smallest objects would be under 4 pixels across their radius.
MIN_IMAGE_SIZE = {'seg': 48, 'det': 48, 'cls': 24}
SPLITS = ('train', 'val')

_GENERATOR_VERSION = 1
_MARKER = '.demo_data.json'
_TASK_KEY = {'seg': 1, 'det': 2, 'cls': 3}
_SPLIT_KEY = {'train': 0, 'val': 1}
# Hue ranges (degrees) of the object classes; saturation and value are drawn from the ranges below.
_HUE_RANGE = {'disc': (-14, 14), 'ring': (44, 66), 'square': (104, 146), 'triangle': (206, 246)}
_OBJECT_SATURATION = (0.65, 1.0)
_OBJECT_VALUE = (0.55, 1.0)
_BACKGROUND_SATURATION = (0.0, 0.3)
_BACKGROUND_VALUE = (0.15, 0.85)
_SCENE_RADIUS = (0.09, 0.22)  # circumradius range of the seg/det objects, as a fraction of the image side
_CLS_RADIUS = (0.24, 0.40)
_CLS_DISTRACTOR_RADIUS = (0.10, 0.15)
_MIN_VISIBLE = 0.4
_BORDER = 1.0  # width (pixels) of the unlabelled band outside each object in the seg labels
_JPEG = dict(format='JPEG', quality=95, subsampling=0)


# ----------------------------------------------------------------------------------------------------------- shapes
@dataclass
class _Shape:
    label: int  # index in DEMO_OBJECT_CLASSES
    cx: float
    cy: float
    radius: float  # circumradius (the ring's outer radius)
    angle: float
    inner: float = 0.0  # the ring's inner radius

    @property
    def name(self):
        return DEMO_OBJECT_CLASSES[self.label]

    def vertices(self, disc_sides=48):
        """Corners (N, 2) of the shape as a polygon in pixel coordinates (pixel (i, j) covers [j, j+1) x [i, i+1));
        the disc as a regular ``disc_sides``-gon through the circle. Not defined for the ring."""
        sides = {'disc': disc_sides, 'square': 4, 'triangle': 3}[self.name]
        t = self.angle + 2 * np.pi * np.arange(sides) / sides
        return np.stack([self.cx + self.radius * np.cos(t), self.cy + self.radius * np.sin(t)], axis=1)

    def sdf(self, xs, ys):
        """Signed distance (pixels) from each point to the shape's edge, negative inside."""
        if self.name in ('disc', 'ring'):
            dist = np.hypot(xs - self.cx, ys - self.cy)
            if self.name == 'disc':
                return dist - self.radius
            return np.maximum(self.inner - dist, dist - self.radius)
        return _convex_polygon_sdf(self.vertices(), xs, ys)


def _convex_polygon_sdf(vertices, xs, ys):
    """Exact signed distance to a convex polygon whose vertices run counter-clockwise in (x, y)."""
    dist = np.full(xs.shape, np.inf)
    inside = np.ones(xs.shape, dtype=bool)
    for (x0, y0), (x1, y1) in zip(vertices, np.roll(vertices, -1, axis=0)):
        ex, ey = x1 - x0, y1 - y0
        px, py = xs - x0, ys - y0
        t = np.clip((px * ex + py * ey) / (ex * ex + ey * ey), 0.0, 1.0)
        dist = np.minimum(dist, np.hypot(px - t * ex, py - t * ey))
        inside &= (ex * py - ey * px) >= 0
    return np.where(inside, -dist, dist)


def _random_shape(rng, label, size, radius_range, center=None):
    radius = rng.uniform(*radius_range) * size
    margin = radius + _BORDER + 1.0
    if center is None:
        cx, cy = rng.uniform(margin, size - margin, size=2)
    else:
        cx, cy = np.clip(center, margin, size - margin)
    inner = radius * rng.uniform(0.45, 0.65) if DEMO_OBJECT_CLASSES[label] == 'ring' else 0.0
    return _Shape(int(label), float(cx), float(cy), float(radius), float(rng.uniform(0, 2 * np.pi)), float(inner))


def _hsv(h_deg, s, v):
    return np.array(colorsys.hsv_to_rgb((h_deg / 360.0) % 1.0, s, v))


# ----------------------------------------------------------------------------------------------------------- render
def _grid(size):
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    return xs + 0.5, ys + 0.5  # pixel centres


def _smooth_noise(rng, size):
    cells = int(rng.choice([2, 4, 8, 16]))
    low = rng.random((cells + 1, cells + 1)).astype(np.float32)
    field = np.asarray(Image.fromarray(low).resize((size, size), Image.BICUBIC), dtype=np.float64)
    return field


def _background(rng, size, xs, ys):
    """A texture (size, size, 3) in [0, 1]: one to three random components, mapped onto 2-3 dull colours."""
    kinds = rng.choice(['noise', 'stripes', 'gradient', 'checker'], size=int(rng.integers(1, 4)), replace=False)
    field = np.zeros((size, size))
    for kind in kinds:
        theta = rng.uniform(0, np.pi)
        u = xs * np.cos(theta) + ys * np.sin(theta)
        if kind == 'noise':
            part = _smooth_noise(rng, size)
        elif kind == 'stripes':
            period = rng.uniform(0.05, 0.25) * size
            part = 0.5 + 0.5 * np.sin(2 * np.pi * u / period + rng.uniform(0, 2 * np.pi))
            if rng.random() < 0.5:
                part = (part > 0.5).astype(np.float64)
        elif kind == 'gradient':
            part = u
        else:
            cell = rng.uniform(0.05, 0.2) * size
            v = -xs * np.sin(theta) + ys * np.cos(theta)
            part = ((np.floor(u / cell) + np.floor(v / cell)) % 2).astype(np.float64)
        part = (part - part.min()) / max(part.max() - part.min(), 1e-6)
        field += rng.uniform(0.3, 1.0) * part
    field = (field - field.min()) / max(field.max() - field.min(), 1e-6)
    colours = [
        _hsv(rng.uniform(0, 360), rng.uniform(*_BACKGROUND_SATURATION), rng.uniform(*_BACKGROUND_VALUE))
        for _ in range(int(rng.integers(2, 4)))
    ]
    # piecewise-linear colour map through the colours
    pos = field * (len(colours) - 1)
    index = np.minimum(pos.astype(int), len(colours) - 2)
    frac = (pos - index)[..., None]
    table = np.stack(colours)
    image = table[index] * (1 - frac) + table[index + 1] * frac
    return image + rng.normal(0, rng.uniform(0.01, 0.04), size=image.shape)


def _paint(rng, image, shape, sdf, xs, ys):
    """Draw one object over ``image`` in place: its class's colour range, a shading gradient, some noise and an
    anti-aliased edge (coverage 1 inside, falling to 0 within half a pixel of the edge)."""
    lo, hi = _HUE_RANGE[shape.name]
    colour = _hsv(rng.uniform(lo, hi), rng.uniform(*_OBJECT_SATURATION), rng.uniform(*_OBJECT_VALUE))
    phi = rng.uniform(0, 2 * np.pi)
    shading = 1 + rng.uniform(-0.25, 0.25) * ((xs - shape.cx) * np.cos(phi) + (ys - shape.cy) * np.sin(phi)) / (
        shape.radius)
    fill = colour * shading[..., None] + rng.normal(0, 0.03, size=image.shape)
    alpha = np.clip(0.5 - sdf, 0.0, 1.0)[..., None]
    image *= 1 - alpha
    image += alpha * fill


def _to_uint8(image):
    return np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)


def _scene(rng, size, first_label):
    """2-5 overlapping objects: returns the image, the ADE-style label map, and per object (shape, visible mask,
    whether it is fully visible)."""
    xs, ys = _grid(size)
    num = int(rng.integers(2, 6))
    shapes, sdfs, full, visible = [], [], [], []
    for k in range(num):
        label = first_label if k == 0 else int(rng.integers(len(DEMO_OBJECT_CLASSES)))
        for _ in range(30):
            shape = _random_shape(rng, label, size, _SCENE_RADIUS)
            sdf = shape.sdf(xs, ys)
            inside = sdf <= 0
            if all((vis & ~inside).sum() >= _MIN_VISIBLE * f.sum() for vis, f in zip(visible, full)):
                break
        else:
            continue  # no place found where every earlier object stays visible enough: leave this one out
        visible = [vis & ~inside for vis in visible]
        shapes.append(shape)
        sdfs.append(sdf)
        full.append(inside)
        visible.append(inside.copy())
    image = _background(rng, size, xs, ys)
    label_map = np.ones((size, size), dtype=np.uint8)  # 1 = background texture
    for shape, sdf in zip(shapes, sdfs):
        _paint(rng, image, shape, sdf, xs, ys)
        label_map[(sdf > 0) & (sdf <= _BORDER)] = 0  # unlabelled band outside the edge
        label_map[sdf <= 0] = shape.label + 2
    image += rng.normal(0, 0.01, size=image.shape)
    objects = [(shape, vis, bool((vis == f).all())) for shape, vis, f in zip(shapes, visible, full)]
    return _to_uint8(image), label_map, objects


def _cls_image(rng, size, label):
    xs, ys = _grid(size)
    image = _background(rng, size, xs, ys)
    if rng.random() < 0.25:  # a small object of another class, partly hidden behind the main one
        other = (label + int(rng.integers(1, len(DEMO_OBJECT_CLASSES)))) % len(DEMO_OBJECT_CLASSES)
        small = _random_shape(rng, other, size, _CLS_DISTRACTOR_RADIUS)
        _paint(rng, image, small, small.sdf(xs, ys), xs, ys)
    center = size / 2 + rng.uniform(-0.15, 0.15, size=2) * size
    shape = _random_shape(rng, label, size, _CLS_RADIUS, center=center)
    _paint(rng, image, shape, shape.sdf(xs, ys), xs, ys)
    image += rng.normal(0, 0.01, size=image.shape)
    return _to_uint8(image)


# ------------------------------------------------------------------------------------------------------ annotations
def _uncompressed_rle(mask):
    """COCO's uncompressed RLE of a boolean mask: run lengths in column-major order, starting with a 0-run."""
    flat = np.asarray(mask, dtype=bool).T.ravel()
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    counts = np.diff(np.concatenate([[0], change, [flat.size]])).tolist()
    if flat[0]:
        counts = [0] + counts
    return {'size': [int(mask.shape[0]), int(mask.shape[1])], 'counts': counts}


def _coco_annotation(shape, visible, fully_visible, ann_id, image_id):
    rows, cols = np.nonzero(visible)
    x0, y0 = int(cols.min()), int(rows.min())
    bbox = [x0, y0, int(cols.max()) - x0 + 1, int(rows.max()) - y0 + 1]
    if fully_visible and shape.name != 'ring':
        segmentation = [[round(float(v), 2) for v in shape.vertices().ravel()]]
    else:
        segmentation = _uncompressed_rle(visible)
    return {
        'id': ann_id, 'image_id': image_id, 'category_id': shape.label + 1, 'bbox': bbox,
        'area': int(visible.sum()), 'segmentation': segmentation, 'iscrowd': 0
    }


# ------------------------------------------------------------------------------------------------------- arguments
def _per_task(value, defaults, name, tasks):
    """``value`` is None (defaults), an int for every task, or a mapping task -> int; returns task -> int."""
    if value is None:
        value = {}
    elif isinstance(value, Mapping):
        unknown = sorted(set(value) - set(TASKS), key=str)
        if unknown:
            raise ValueError(f'{name} names unknown task(s) {unknown}; allowed: {list(TASKS)}')
    else:
        value = {task: value for task in TASKS}
    result = {}
    for task in tasks:
        v = value.get(task, defaults[task])
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0:
            raise ValueError(f'{name} for {task!r} must be a positive integer, got {v!r}')
        result[task] = int(v)
    return result


def _check_tasks(tasks):
    tasks = (tasks, ) if isinstance(tasks, str) else tuple(tasks)
    if not tasks:
        raise ValueError(f'tasks is empty; allowed: {list(TASKS)}')
    for task in tasks:
        if task not in TASKS:
            raise ValueError(f'unknown task {task!r}; allowed: {list(TASKS)}')
    return tuple(task for task in TASKS if task in tasks)  # fixed order, no repeats


# ------------------------------------------------------------------------------------------------------ the layouts
def _layout(root, task):
    """Where a task's data goes: its data root and the paths (relative to it) that make_demo_data writes."""
    if task == 'seg':
        return dict(data_root=osp.join(root, 'ade', 'ADEChallengeData2016'), owned=['images', 'annotations'],
                    img_dir={'train': 'images/training', 'val': 'images/validation'},
                    ann_dir={'train': 'annotations/training', 'val': 'annotations/validation'})
    if task == 'det':
        return dict(data_root=osp.join(root, 'coco'),
                    owned=['train2017', 'val2017', 'annotations/instances_train2017.json',
                           'annotations/instances_val2017.json'],
                    img_dir={'train': 'train2017', 'val': 'val2017'},
                    ann_file={s: f'annotations/instances_{s}2017.json' for s in SPLITS})
    return dict(data_root=osp.join(root, 'imagenet'), owned=['train', 'val', 'meta'],
                data_prefix={'train': 'train', 'val': 'val'}, ann_file={s: f'meta/{s}.txt' for s in SPLITS})


def demo_dataset_cfg(task, split='train', root='data/demo', pipeline=()):
    """The dataset config (a dict for ``train_dataloader.dataset`` etc.) that reads one split of the demo data
    with the task package's own dataset class; see the module's docstring for why seg uses ``BaseSegDataset``."""
    task = _check_tasks(task)[0]
    if split not in SPLITS:
        raise ValueError(f'unknown split {split!r}; allowed: {list(SPLITS)}')
    layout = _layout(root, task)
    common = dict(data_root=layout['data_root'], metainfo=DEMO_METAINFO[task], pipeline=list(pipeline))
    if task == 'seg':
        return dict(type='BaseSegDataset', img_suffix='.jpg', seg_map_suffix='.png', reduce_zero_label=True,
                    data_prefix=dict(img_path=layout['img_dir'][split], seg_map_path=layout['ann_dir'][split]),
                    **common)
    if task == 'det':
        return dict(type='CocoDataset', ann_file=layout['ann_file'][split],
                    data_prefix=dict(img=layout['img_dir'][split] + '/'), **common)
    return dict(type='CustomDataset', data_prefix=layout['data_prefix'][split], ann_file=layout['ann_file'][split],
                **common)


def _settings(seed, num_train, num_val, image_size):
    return {'generator': 'mmssm.datasets.demo_data', 'version': _GENERATOR_VERSION, 'seed': seed,
            'num_train': num_train, 'num_val': num_val, 'image_size': image_size}


def _read_marker(data_root):
    try:
        with open(osp.join(data_root, _MARKER)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _write_marker(data_root, settings, complete):
    with open(osp.join(data_root, _MARKER), 'w') as f:
        json.dump(dict(settings, complete=complete), f, indent=1)


class _Progress:

    def __init__(self, enabled, what, total):
        self.enabled, self.what, self.total = enabled, what, total
        self.step = max(1, total // 5)

    def __call__(self, done):
        if self.enabled and (done % self.step == 0 or done == self.total):
            print(f'[demo data] {self.what}: {done}/{self.total}', flush=True)


def _save_image(array, path):
    Image.fromarray(array).save(path, **_JPEG)


def _rng(seed, task, split, *index):
    return np.random.default_rng([seed, _TASK_KEY[task], _SPLIT_KEY[split], *index])


def _write_seg(data_root, layout, seed, counts, size, progress):
    for split in SPLITS:
        img_dir = osp.join(data_root, layout['img_dir'][split])
        ann_dir = osp.join(data_root, layout['ann_dir'][split])
        os.makedirs(img_dir, exist_ok=True)
        os.makedirs(ann_dir, exist_ok=True)
        stem = 'ADE_train' if split == 'train' else 'ADE_val'
        tick = _Progress(progress, f'seg {split}', counts[split])
        for i in range(counts[split]):
            image, label_map, _ = _scene(_rng(seed, 'seg', split, i), size, i % len(DEMO_OBJECT_CLASSES))
            name = f'{stem}_{i + 1:08d}'
            _save_image(image, osp.join(img_dir, name + '.jpg'))
            Image.fromarray(label_map).save(osp.join(ann_dir, name + '.png'))
            tick(i + 1)
    return {}


def _write_det(data_root, layout, seed, counts, size, progress):
    os.makedirs(osp.join(data_root, 'annotations'), exist_ok=True)
    categories = [{'id': i + 1, 'name': name, 'supercategory': 'shape'} for i, name in enumerate(DEMO_DET_CLASSES)]
    instances = {}
    for split in SPLITS:
        img_dir = osp.join(data_root, layout['img_dir'][split])
        os.makedirs(img_dir, exist_ok=True)
        images, annotations = [], []
        tick = _Progress(progress, f'det {split}', counts[split])
        for i in range(counts[split]):
            image, _, objects = _scene(_rng(seed, 'det', split, i), size, i % len(DEMO_OBJECT_CLASSES))
            image_id = i + 1
            file_name = f'{image_id:012d}.jpg'
            _save_image(image, osp.join(img_dir, file_name))
            images.append({'id': image_id, 'file_name': file_name, 'width': size, 'height': size})
            for shape, visible, fully_visible in objects:
                annotations.append(
                    _coco_annotation(shape, visible, fully_visible, len(annotations) + 1, image_id))
            tick(i + 1)
        coco = {
            'info': {'description': f'mmssm generated demo data ({split}), seed {seed}', 'version': '1.0'},
            'licenses': [], 'images': images, 'annotations': annotations, 'categories': categories
        }
        with open(osp.join(data_root, layout['ann_file'][split]), 'w') as f:
            json.dump(coco, f, separators=(',', ':'))
        instances[split] = len(annotations)
    return {'num_instances': instances}


def _write_cls(data_root, layout, seed, counts, size, progress):
    os.makedirs(osp.join(data_root, 'meta'), exist_ok=True)
    for split in SPLITS:
        prefix = osp.join(data_root, layout['data_prefix'][split])
        lines = []
        total = counts[split] * len(DEMO_CLS_CLASSES)
        tick = _Progress(progress, f'cls {split}', total)
        for label, name in enumerate(DEMO_CLS_CLASSES):
            os.makedirs(osp.join(prefix, name), exist_ok=True)
            for i in range(counts[split]):
                image = _cls_image(_rng(seed, 'cls', split, label, i), size, label)
                rel = f'{name}/{name}_{i + 1:05d}.jpg'
                _save_image(image, osp.join(prefix, rel))
                lines.append(f'{rel} {label}\n')
                tick(len(lines))
        with open(osp.join(data_root, layout['ann_file'][split]), 'w') as f:
            f.writelines(lines)
    return {}


_WRITERS = {'seg': _write_seg, 'det': _write_det, 'cls': _write_cls}


def make_demo_data(root='data/demo', tasks=TASKS, seed=0, num_train=None, num_val=None, image_size=None,
                   overwrite=False, progress=True):
    """Generate the demo dataset under ``root`` in the layouts of ADE20K (seg), COCO (det) and ImageNet (cls).

    Args:
        root: where the three layouts go (``<root>/ade``, ``<root>/coco``, ``<root>/imagenet``).
        tasks: any of ``'seg'``, ``'det'``, ``'cls'`` (a name or a sequence).
        seed: a non-negative int; the same seed gives byte-identical files.
        num_train, num_val: images per split -- for cls per class. An int for every task, a mapping task -> int, or
            None for the defaults (seg and det 200 / 40, cls 100 / 20 per class).
        image_size: the side of the square images, likewise an int, a mapping or None (seg and det 128, cls 64; at
            least 48, 48, 24).
        overwrite: regenerate a task's data that exists already. Without it, existing demo data is kept (and a
            message says so, a warning where it was made with other settings).
        progress: print a counter per split.

    Returns:
        dict: ``root``, ``seed``, ``seconds`` and, per task, its ``data_root``, the relative paths of images and
        annotations per split, ``seed``, ``num_images`` per split, ``image_size``, ``classes``, ``skipped`` (kept
        as it was) and, for det, ``num_instances`` per split. For a skipped task, the settings it was made with.

    Raises:
        ValueError: an unknown task, a count that is not a positive int, an image size below the task's minimum, a
            negative seed.
        FileExistsError: a task's directory holds files that make_demo_data did not write (it never deletes them).
    """
    tasks = _check_tasks(tasks)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f'seed must be a non-negative integer, got {seed!r}')
    seed = int(seed)
    num_train = _per_task(num_train, DEFAULT_NUM_TRAIN, 'num_train', tasks)
    num_val = _per_task(num_val, DEFAULT_NUM_VAL, 'num_val', tasks)
    image_size = _per_task(image_size, DEFAULT_IMAGE_SIZE, 'image_size', tasks)
    for task in tasks:
        if image_size[task] < MIN_IMAGE_SIZE[task]:
            raise ValueError(f'image_size {image_size[task]} is too small for the {task!r} objects; allowed: at least '
                             f'{MIN_IMAGE_SIZE[task]} (minimums {MIN_IMAGE_SIZE})')

    start = time.perf_counter()
    result = {'root': str(root), 'seed': seed}
    for task in tasks:
        layout = _layout(str(root), task)
        data_root = layout['data_root']
        settings = _settings(seed, num_train[task], num_val[task], image_size[task])
        marker = _read_marker(data_root)
        ours = marker is not None and marker.get('generator') == settings['generator']
        if not ours and osp.isdir(data_root) and os.listdir(data_root):
            raise FileExistsError(f'{data_root} holds files that make_demo_data did not write (no {_MARKER}); it '
                                  'leaves them alone: choose another root, or delete the directory yourself')
        if ours and marker.get('complete') and not overwrite:
            made_with = {k: marker.get(k) for k in ('seed', 'num_train', 'num_val', 'image_size', 'version')}
            wanted = {k: settings[k] for k in made_with}
            if made_with != wanted:
                warnings.warn(f'{data_root} holds demo data made with other settings ({made_with}, asked for '
                              f'{wanted}); kept it as it is: pass overwrite=True (--overwrite) to regenerate it',
                              stacklevel=2)
            elif progress:
                print(f'[demo data] {task}: {data_root} exists, skipped (overwrite=True / --overwrite regenerates '
                      'it)', flush=True)
            settings = dict(settings, **{k: marker[k] for k in made_with if k in marker})
            extra = {'num_instances': marker['num_instances']} if 'num_instances' in marker else {}
            skipped = True
        else:
            if ours:  # an interrupted run, or overwrite: remove what we wrote, nothing else
                if progress:
                    print(f'[demo data] {task}: regenerating {data_root}', flush=True)
                for rel in layout['owned']:
                    path = osp.join(data_root, rel)
                    if osp.isdir(path):
                        shutil.rmtree(path)
                    elif osp.exists(path):
                        os.remove(path)
            os.makedirs(data_root, exist_ok=True)
            _write_marker(data_root, settings, complete=False)
            counts = {'train': settings['num_train'], 'val': settings['num_val']}
            extra = _WRITERS[task](data_root, layout, seed, counts, settings['image_size'], progress)
            _write_marker(data_root, dict(settings, **extra), complete=True)
            skipped = False
        per_class = task == 'cls'
        num_images = {s: settings[f'num_{s}'] * (len(DEMO_CLS_CLASSES) if per_class else 1) for s in SPLITS}
        info = {k: v for k, v in layout.items() if k != 'owned'}
        info.update(seed=settings['seed'], num_images=num_images, image_size=settings['image_size'],
                    classes=DEMO_METAINFO[task]['classes'], skipped=skipped, **extra)
        if per_class:
            info['num_per_class'] = {s: settings[f'num_{s}'] for s in SPLITS}
        result[task] = info
    result['seconds'] = round(time.perf_counter() - start, 2)
    return result
