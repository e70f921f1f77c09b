"""The generated demo dataset: deterministic from its seed, and read unchanged by MMSegmentation's ADE20K classes,
MMDetection's CocoDataset and MMPretrain's CustomDataset / ImageNet, with labels as documented."""
import importlib.util
import os
import os.path as osp
from pathlib import Path

import numpy as np
import pytest

import mmssm  # noqa: F401  (first: it guards the mmpretrain import that mmdet and mmseg make)
from mmssm.datasets.demo_data import (
    DEMO_CLASSES,
    DEMO_CLS_CLASSES,
    DEMO_DET_CLASSES,
    DEMO_METAINFO,
    DEMO_OBJECT_CLASSES,
    DEMO_PALETTE,
    demo_dataset_cfg,
    make_demo_data,
)

ROOT = Path(__file__).resolve().parents[2]
SMALL = dict(num_train=8, num_val=4, image_size=dict(seg=96, det=96, cls=48), progress=False)
CLS_COUNTS = dict(num_train=dict(seg=8, det=8, cls=5), num_val=dict(seg=4, det=4, cls=2))


def files(root):
    """relative path -> bytes of every file under root."""
    out = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = osp.join(folder, name)
            out[osp.relpath(path, root)] = Path(path).read_bytes()
    return out


@pytest.fixture(scope='module')
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp('demo')
    result = make_demo_data(str(root), seed=0, **dict(SMALL, **CLS_COUNTS))
    return result


def test_constants_agree():
    assert DEMO_CLASSES == ('background', ) + DEMO_OBJECT_CLASSES
    assert len(DEMO_PALETTE) == len(DEMO_CLASSES)
    assert DEMO_DET_CLASSES == DEMO_CLS_CLASSES == DEMO_OBJECT_CLASSES == tuple(sorted(DEMO_OBJECT_CLASSES))


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    kwargs = dict(SMALL, num_train=3, num_val=1)
    make_demo_data(str(tmp_path / 'a'), seed=7, **kwargs)
    make_demo_data(str(tmp_path / 'b'), seed=7, **kwargs)
    make_demo_data(str(tmp_path / 'c'), seed=8, **kwargs)
    a, b, c = (files(tmp_path / name) for name in 'abc')
    assert len(a) == 2 * (3 + 1) + (3 + 1) + 2 + 4 * (3 + 1) + 2 + 3  # seg img+png, det img+json, cls img+txt, markers
    assert a == b
    assert a.keys() == c.keys()
    images = [key for key in a if key.endswith(('.jpg', '.png'))]
    assert all(a[key] != c[key] for key in images)


def test_counts_do_not_change_earlier_images(tmp_path):
    make_demo_data(str(tmp_path / 'a'), tasks='cls', seed=1, num_train=2, num_val=1, image_size=32, progress=False)
    make_demo_data(str(tmp_path / 'b'), tasks='cls', seed=1, num_train=3, num_val=1, image_size=32, progress=False)
    a, b = files(tmp_path / 'a'), files(tmp_path / 'b')
    assert all(b[key] == value for key, value in a.items() if key.endswith('.jpg'))


SEG_PIPELINE = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]


def seg_labels(dataset):
    return [dataset[i]['data_samples'].gt_sem_seg.data.numpy() for i in range(len(dataset))]


@pytest.mark.filterwarnings('ignore:`reduce_zero_label` will be deprecated')
def test_seg_layout_reads_through_ade20k(demo):
    pytest.importorskip('mmseg')
    from mmengine.registry import init_default_scope
    from mmseg.datasets import ADE20KDataset
    from mmseg.registry import DATASETS
    init_default_scope('mmseg')
    info = demo['seg']
    assert info['num_images'] == {'train': 8, 'val': 4}
    for split in ('train', 'val'):
        prefix = dict(img_path=info['img_dir'][split], seg_map_path=info['ann_dir'][split])
        ade = ADE20KDataset(data_root=info['data_root'], data_prefix=prefix, pipeline=SEG_PIPELINE)
        assert len(ade) == info['num_images'][split]
        labels = seg_labels(ade)
        sample = ade[0]
        assert sample['inputs'].shape == (3, 96, 96)
        values = np.unique(np.concatenate([lab.ravel() for lab in labels]))
        # 0 background, 1..4 the objects, 255 the unlabelled edges (0 in the PNG, reduced away)
        assert set(values.tolist()) == {0, 1, 2, 3, 4, 255}
        for lab in labels:
            ignored = (lab == 255).mean()
            assert 0 < ignored < 0.15, 'the unlabelled band is thin and around every object'
            assert (lab == 0).mean() > 0.2

        # the config's way: the same loading code with the demo's class names
        demo_ds = DATASETS.build(demo_dataset_cfg('seg', split, demo['root'], pipeline=SEG_PIPELINE))
        assert demo_ds.metainfo['classes'] == DEMO_CLASSES
        assert [tuple(c) for c in demo_ds.metainfo['palette']] == list(DEMO_PALETTE)
        assert all((x == y).all() for x, y in zip(seg_labels(demo_ds), labels))

    # ADE20KDataset accepts only ADE20K's own class names in metainfo (so the configs use BaseSegDataset)
    with pytest.raises(ValueError, match='subset'):
        ADE20KDataset(data_root=info['data_root'], data_prefix=prefix, metainfo=DEMO_METAINFO['seg'])


def test_seg_pngs_hold_ade_conventions(demo):
    from PIL import Image
    info = demo['seg']
    folder = osp.join(info['data_root'], info['ann_dir']['train'])
    names = sorted(os.listdir(folder))
    assert names[0] == 'ADE_train_00000001.png'
    assert osp.exists(osp.join(info['data_root'], info['img_dir']['train'], 'ADE_train_00000001.jpg'))
    for name in names:
        label = Image.open(osp.join(folder, name))
        assert label.mode == 'L'
        assert set(np.unique(np.asarray(label)).tolist()) <= set(range(len(DEMO_CLASSES) + 1))


def test_det_layout_reads_through_coco_dataset(demo):
    pytest.importorskip('mmdet')
    import json

    from mmdet.datasets import CocoDataset
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet')
    info = demo['det']
    seen, forms = set(), set()
    for split in ('train', 'val'):
        with open(osp.join(info['data_root'], info['ann_file'][split])) as f:
            coco = json.load(f)
        assert [c['name'] for c in coco['categories']] == list(DEMO_DET_CLASSES)
        assert [c['id'] for c in coco['categories']] == [1, 2, 3, 4]
        assert all(a['iscrowd'] == 0 for a in coco['annotations'])
        forms |= {type(a['segmentation']).__name__ for a in coco['annotations']}
        areas = {a['id']: a['area'] for a in coco['annotations']}

        dataset = CocoDataset(
            data_root=info['data_root'], ann_file=info['ann_file'][split],
            data_prefix=dict(img=info['img_dir'][split] + '/'), metainfo=dict(classes=DEMO_DET_CLASSES),
            pipeline=[dict(type='LoadImageFromFile'),
                      dict(type='LoadAnnotations', with_bbox=True, with_mask=True)])
        assert len(dataset) == info['num_images'][split]
        num_instances = 0
        for i in range(len(dataset)):
            result = dataset[i]
            height, width = result['img'].shape[:2]
            assert (height, width) == (96, 96)
            boxes = result['gt_bboxes'].tensor.numpy()
            masks = result['gt_masks'].masks
            assert len(boxes) >= 1 and not result['gt_ignore_flags'].any()
            assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all()
            assert (boxes[:, 2:] > boxes[:, :2]).all()
            for box, mask in zip(boxes, masks):
                rows, cols = np.nonzero(mask)
                tight = np.array([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1])
                assert np.abs(tight - box).max() <= 1, (box, tight)
            seen |= set(result['gt_bboxes_labels'].tolist())
            num_instances += len(boxes)
            # the masks as decoded agree with the areas written
            ann_ids = [a['id'] for a in coco['annotations'] if a['image_id'] == coco['images'][i]['id']]
            for ann_id, mask in zip(ann_ids, masks):
                assert abs(int(mask.sum()) - areas[ann_id]) <= max(3, 0.05 * areas[ann_id])
        assert num_instances == info['num_instances'][split]
    assert seen == set(range(len(DEMO_DET_CLASSES)))
    assert forms == {'list', 'dict'}, 'polygons for whole convex shapes, RLE for rings and occluded objects'


def test_cls_layout_reads_through_custom_dataset(demo):
    pytest.importorskip('mmpretrain')
    from mmpretrain.datasets import CustomDataset, ImageNet
    info = demo['cls']
    assert info['num_per_class'] == {'train': 5, 'val': 2}
    for split in ('train', 'val'):
        n = info['num_per_class'][split]
        expected = np.repeat(np.arange(len(DEMO_CLS_CLASSES)), n)
        folders = CustomDataset(data_root=info['data_root'], data_prefix=info['data_prefix'][split])
        assert folders.CLASSES == DEMO_CLS_CLASSES
        assert len(folders) == info['num_images'][split] == n * len(DEMO_CLS_CLASSES)
        assert (np.sort(folders.get_gt_labels()) == expected).all()
        listed = CustomDataset(data_root=info['data_root'], data_prefix=info['data_prefix'][split],
                               ann_file=info['ann_file'][split], metainfo=DEMO_METAINFO['cls'])
        assert (listed.get_gt_labels() == expected).all()
        by_path = {d['img_path']: d['gt_label'] for d in folders.load_data_list()}
        assert all(by_path[d['img_path']] == d['gt_label'] for d in listed.load_data_list())
        imagenet = ImageNet(data_root=info['data_root'], split=split, metainfo=DEMO_METAINFO['cls'])
        assert (imagenet.get_gt_labels() == expected).all()
        sample = imagenet.prepare_data(0)
        assert osp.basename(osp.dirname(sample['img_path'])) == DEMO_CLS_CLASSES[int(sample['gt_label'])]


def test_existing_data_is_skipped_unless_overwrite(tmp_path, capsys):
    root = str(tmp_path)
    kwargs = dict(tasks=('cls', ), num_train=1, num_val=1, image_size=32)
    first = make_demo_data(root, progress=True, **kwargs)
    assert not first['cls']['skipped']
    out = capsys.readouterr().out
    assert 'cls train: 4/4' in out and 'cls val: 4/4' in out
    image = osp.join(root, 'imagenet', 'train', 'disc', 'disc_00001.jpg')
    stamp = os.stat(image).st_mtime_ns

    second = make_demo_data(root, progress=True, **kwargs)
    assert second['cls']['skipped'] and os.stat(image).st_mtime_ns == stamp
    assert 'exists, skipped' in capsys.readouterr().out

    with pytest.warns(UserWarning, match='other settings'):
        other = make_demo_data(root, progress=False, seed=5, **kwargs)
    assert other['cls']['skipped'] and other['cls']['seed'] == 0

    before = Path(image).read_bytes()
    third = make_demo_data(root, progress=False, seed=5, overwrite=True, **kwargs)
    assert not third['cls']['skipped'] and third['cls']['seed'] == 5
    assert Path(image).read_bytes() != before

    foreign = tmp_path / 'foreign'
    (foreign / 'imagenet').mkdir(parents=True)
    (foreign / 'imagenet' / 'mine.txt').write_text('not demo data')
    with pytest.raises(FileExistsError, match='did not write'):
        make_demo_data(str(foreign), overwrite=True, progress=False, **kwargs)
    assert (foreign / 'imagenet' / 'mine.txt').exists()


@pytest.mark.parametrize('kwargs, match', [
    (dict(tasks=('seg', 'depth')), r"unknown task 'depth'; allowed: \['seg', 'det', 'cls'\]"),
    (dict(tasks=()), 'tasks is empty'),
    (dict(num_train=0), "num_train for 'seg' must be a positive integer, got 0"),
    (dict(num_val=dict(cls=-2), tasks='cls'), "num_val for 'cls' must be a positive integer, got -2"),
    (dict(num_train=dict(segm=3)), r"num_train names unknown task\(s\) \['segm'\]"),
    (dict(image_size=2.5), "image_size for 'seg' must be a positive integer, got 2.5"),
    (dict(image_size=32), "image_size 32 is too small for the 'seg' objects; allowed: at least 48"),
    (dict(image_size=dict(cls=16), tasks='cls'), "image_size 16 is too small for the 'cls' objects"),
    (dict(seed=-1), 'seed must be a non-negative integer, got -1'),
])
def test_bad_arguments_are_named(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_demo_data(str(tmp_path), progress=False, **kwargs)
    assert not os.listdir(tmp_path)


def test_cli_writes_and_describes(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location('make_demo_data_tool', ROOT / 'tools' / 'misc' / 'make_demo_data.py')
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    result = tool.main(['--root', str(tmp_path), '--tasks', 'det', '--num-train', '2', '--num-val', '1',
                        '--image-size', '64', '--seed', '3', '--quiet'])
    out = capsys.readouterr().out
    assert result['det']['num_images'] == {'train': 2, 'val': 1} and 'seg' not in result
    assert f'det: {tmp_path}/coco written: train 2, val 1 images of 64x64' in out
    assert 'instances_train2017.json' in out and "'type': 'CocoDataset'" in out
    with pytest.raises(SystemExit, match="error: num_train for 'det' must be a positive integer, got 0"):
        tool.main(['--root', str(tmp_path / 'x'), '--tasks', 'det', '--num-train', '0'])
