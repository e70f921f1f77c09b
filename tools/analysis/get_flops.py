"""Count the FLOPs (selective scan included) and parameters of a config's model for one input.

    python tools/analysis/get_flops.py configs/cls/vim-tiny-p16_8xb128_in1k.py [--shape H [W]] [--per-module [DEPTH]]
                                       [--device cpu|cuda] [--cfg-options key=value ...]

MMEngine's FlopAnalyzer (fvcore's conventions: a multiply-add is one FLOP; elementwise ops, activations and
norms built from them are not counted) does the counting; the selective scan, which it cannot see, is counted
with the formula of mmssm.analysis.flops.count_scan_flops. What is counted: a classifier's backbone, neck and head;
a segmentor's backbone, neck and decode head (no auxiliary head, as mmseg's get_flops); a detector's whole
network in 'tensor' mode (backbone, neck, RPN and RoI heads on the proposals of a random image, as mmdet's
get_flops), all with construction-time weights.
"""
import argparse
import os.path as osp
import sys
import time
import warnings

warnings.filterwarnings('ignore', message='pkg_resources is deprecated')  # from mmengine, on every run
sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))  # an uninstalled checkout works

import mmssm  # noqa: E402,F401  (guards mmpretrain's import under transformers >= 5)
import mmssm.engine  # noqa: E402,F401
import mmssm.models  # noqa: E402,F401


def parse_args(argv=None):
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='config file')
    parser.add_argument('--shape', type=int, nargs='+', metavar='SIZE',
                        help='input height and width (one value: square); default: the backbone img_size for '
                             'classification, the crop size for segmentation, 800 1333 for detection')
    parser.add_argument('--per-module', type=int, nargs='?', const=3, default=None, metavar='DEPTH',
                        help='also print the per-module table, down to DEPTH levels (default 3)')
    parser.add_argument('--device', default='cpu', help='where to trace (default cpu)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config keys, e.g. model.backbone.arch=small (keys must exist)')
    args = parser.parse_args(argv)
    if args.shape is not None and len(args.shape) not in (1, 2):
        parser.error(f'--shape takes H or H W, got {len(args.shape)} values.')
    return args


def progress(message):
    print(message, flush=True)


def _giga(value):
    return f'{value / 1e9:.3f} G' if value >= 1e8 else f'{value / 1e6:.3f} M'


def main(argv=None):
    args = parse_args(argv)
    from mmengine.analysis import parameter_count

    from mmssm.analysis.flops import (
        analyze_flops,
        build_model_from_cfg,
        default_shape,
        prepare_dummy_input,
        scan_flops,
    )
    from mmssm.utils.launch import load_config

    try:
        cfg = load_config(args.config, args.cfg_options)
        progress('building model...')
        model, task = build_model_from_cfg(cfg, args.device)
    except (FileNotFoundError, ValueError) as error:
        sys.exit(f'error: {error}')
    shape = default_shape(cfg, task) if args.shape is None else tuple(args.shape * (3 - len(args.shape)))
    inputs = prepare_dummy_input(model, task, shape, device=args.device)
    progress(f'tracing {type(model).__name__} on a {shape[0]}x{shape[1]} input (runs the model once)...')
    start = time.perf_counter()
    analyzer = analyze_flops(model, (inputs,))
    total, scan = analyzer.total(), scan_flops(analyzer)
    params = parameter_count(model)['']
    progress(f'traced in {time.perf_counter() - start:.1f} s')

    padded = tuple(inputs.shape[-2:])
    padding = f' (padded to {padded[0]} x {padded[1]} by the data preprocessor)' if padded != shape else ''
    rows = [('config', args.config),
            ('model', f'{type(model).__name__} ({task})'),
            ('input', f'{inputs.shape[0]} x {inputs.shape[1]} x {shape[0]} x {shape[1]}{padding}'),
            ('FLOPs', f'{_giga(total)}  ({total} FLOPs; a multiply-add counts 1)'),
            ('  selective scan', f'{_giga(scan)}  ({scan}, {100 * scan / max(total, 1):.1f} %)'),
            ('  everything else', f'{_giga(total - scan)}  ({total - scan})'),
            ('params', f'{params / 1e6:.3f} M')]
    by_operator = analyzer.by_operator()
    rows += [(f'    {name}', _giga(count)) for name, count in by_operator.most_common() if name != 'selective_scan']
    width = max(len(name) for name, _ in rows) + 2
    line = '=' * 72
    print(line)
    for name, value in rows:
        print(f'{name:<{width}}{value}')
    uncounted = sorted(analyzer.unsupported_ops())
    if uncounted:
        print(f'not counted (elementwise, as MMEngine): {", ".join(op.split("::")[-1] for op in uncounted)}')
    print(line)
    if args.per_module is not None:
        from mmengine.analysis.print_helper import complexity_stats_table
        print(complexity_stats_table(flops=analyzer, max_depth=args.per_module, show_param_shapes=False))


if __name__ == '__main__':
    main()
