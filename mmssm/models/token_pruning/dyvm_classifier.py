"""``mmssm.DyVMClassifier``: an MMPretrain ``ImageClassifier`` that trains a :class:`DyVim` with the DyVM loss
against a frozen dense teacher.

MMPretrain is imported when the classifier is built, not when ``mmssm.models`` is imported (the registry entry is
a builder function that makes the class on first use, as ``mmssm.AttentionPoolingHead``)."""
import functools
import logging

import torch
from mmengine.logging import print_log

from mmssm.registry import MODELS

from ..backbones.vim import Vim
from .dyvm import DyVim


class _SharedTeacher:
    """Holds the teacher outside the student's module tree: not in its state dict, its parameters (optimizer,
    EMA, DDP) or its train() / eval(); deep copies of the student (an EMA model) share it."""

    def __init__(self, module):
        self.module = module

    def __deepcopy__(self, memo):
        return self


@functools.cache
def _classifier_class():
    from mmengine.runner import load_checkpoint
    from mmpretrain.models.classifiers import ImageClassifier
    from mmpretrain.registry import MODELS as PRETRAIN_MODELS

    class DyVMClassifier(ImageClassifier):
        """DyVM fine-tuning of a Vim classifier (Wu et al., "Dynamic Vision Mamba", 2025).

        The student is an ``ImageClassifier`` with a :class:`~mmssm.models.token_pruning.DyVim` backbone. Its
        training loss is the head's classification loss (the head's ``loss`` config: label smoothing, Mixup /
        CutMix soft targets as usual) plus :class:`~mmssm.models.token_pruning.DyVMLoss` (token and block keep-ratio
        losses, KL distillation of the logits and MSE of the kept tokens' final features against the teacher).
        Inference (``predict`` / ``tensor``) is the student alone, pruned.

        Args:
            backbone, neck, head, train_cfg, data_preprocessor, init_cfg: as ``ImageClassifier``; the backbone
                must be a ``DyVim``.
            teacher (dict, optional): config of the dense teacher, an MMPretrain classifier whose backbone is an
                ``mmssm.Vim`` with a class token (built with MMPretrain's registry). None: no teacher (inference
                only; ``loss`` then raises).
            teacher_checkpoint (str, optional): checkpoint of the whole teacher classifier (``backbone.*``,
                ``head.*``; e.g. ``tools/model_converters/vim2mmssm.py`` output), loaded strictly at construction.
                None leaves the teacher at its random initialization: for demos and tests only.
            init_from_teacher (bool): at ``init_weights``, load the teacher's weights into the student (every key
                but the predictors and gates, which keep their initialization), so fine-tuning starts from the
                dense model; the teacher's architecture must then match the student's. Default: True.
            dyvm_loss (dict): config of the ``mmssm.DyVMLoss`` (weights, block keep ratio).
        """

        def __init__(self, backbone, teacher=None, teacher_checkpoint=None, init_from_teacher=True,
                     dyvm_loss=None, **kwargs):
            super().__init__(backbone=backbone, **kwargs)
            if not isinstance(self.backbone, DyVim):
                raise ValueError(f'DyVMClassifier: the backbone must be an mmssm.DyVim, got '
                                 f'{type(self.backbone).__name__}.')
            if self.head is None or not hasattr(self.head, '_get_loss'):
                raise ValueError('DyVMClassifier: needs an MMPretrain ClsHead-based head (e.g. LinearClsHead).')
            self.dyvm_loss = MODELS.build(dict(type='mmssm.DyVMLoss', **(dyvm_loss or {})))
            self.init_from_teacher = init_from_teacher
            self._teacher = None if teacher is None else _SharedTeacher(self._build_teacher(teacher,
                                                                                            teacher_checkpoint))
            if self._teacher is None and init_from_teacher:
                raise ValueError('DyVMClassifier: init_from_teacher=True needs a teacher; give teacher (and '
                                 'teacher_checkpoint) or set init_from_teacher=False.')

        @staticmethod
        def _build_teacher(cfg, checkpoint):
            teacher = PRETRAIN_MODELS.build(cfg) if isinstance(cfg, dict) else cfg
            backbone = getattr(teacher, 'backbone', None)
            if not isinstance(backbone, Vim) or backbone.cls_token_position == 'none' \
                    or getattr(teacher, 'head', None) is None:
                raise ValueError('DyVMClassifier: teacher must be an MMPretrain classifier with an mmssm.Vim backbone '
                                 "with a class token ('middle' or 'head') and a head.")
            if backbone.out_indices != [backbone.depth - 1] or backbone.feature_source != 'stream':
                raise ValueError(f'DyVMClassifier: the teacher backbone must output its last block (out_indices=-1, '
                                 f"feature_source='stream'), got out_indices={backbone.out_indices}, "
                                 f'feature_source={backbone.feature_source!r}.')
            backbone.out_type = 'raw'  # every token, for the token distillation; the head gets the class token
            if checkpoint is None:
                print_log('DyVMClassifier: teacher_checkpoint=None: the teacher keeps its random initialization '
                          '(demos and tests only; give the dense Vim checkpoint to fine-tune).', logger='current',
                          level=logging.WARNING)
                teacher.init_weights()
            else:
                load_checkpoint(teacher, checkpoint, map_location='cpu', strict=True)
            teacher.requires_grad_(False)
            return teacher.eval()

        @property
        def teacher(self):
            return None if self._teacher is None else self._teacher.module

        def _apply(self, fn, *args, **kwargs):  # .to(), .cuda(), .half() also move the teacher
            super()._apply(fn, *args, **kwargs)
            if self._teacher is not None:
                self._teacher.module._apply(fn, *args, **kwargs)
            return self

        def init_weights(self):
            super().init_weights()
            if not self.init_from_teacher:
                return
            own = self.state_dict()
            source = {key: value for key, value in self.teacher.state_dict().items() if key in own}
            mismatched = [key for key, value in source.items() if value.shape != own[key].shape]
            if mismatched:
                raise ValueError(f'DyVMClassifier: init_from_teacher needs the teacher\'s architecture to match the '
                                 f'student\'s; shapes differ at {mismatched[:3]}. Set init_from_teacher=False and '
                                 "initialize the student with init_cfg=dict(type='Pretrained', checkpoint=...).")
            missing = self.load_state_dict(source, strict=False).missing_keys
            unexpected = [key for key in missing if not key.startswith(('backbone.token_predictors.',
                                                                        'backbone.direction_gates.'))]
            if unexpected:
                raise ValueError(f'DyVMClassifier: init_from_teacher left student weights without a teacher value: '
                                 f'{unexpected[:3]}; the teacher\'s architecture must match the student\'s.')

        @torch.no_grad()
        def teacher_outputs(self, inputs):
            """(logits, tokens (batch, L, C) of the last block after the final norm, original order)."""
            teacher = self.teacher
            tokens = teacher.backbone(inputs)[-1]
            grid = teacher.backbone.patch_embed.grid(inputs.shape[-2:])
            cls = tokens[:, teacher.backbone._pos_cls_index(grid[0] * grid[1])]
            feats = (cls,)
            if teacher.with_neck:
                feats = teacher.neck(feats)
            return teacher.head(feats), tokens

        def loss(self, inputs, data_samples):
            if self.teacher is None:
                raise RuntimeError('DyVMClassifier: training needs the teacher; build it with teacher=dict(...).')
            student = self.backbone.forward_masked(inputs)
            feats = student['outputs']
            if self.with_neck:
                feats = self.neck(feats)
            logits = self.head(feats)
            losses = self.head._get_loss(logits, data_samples)
            teacher_logits, teacher_tokens = self.teacher_outputs(inputs)
            if teacher_tokens.shape != student['tokens'].shape:
                raise ValueError(f'DyVMClassifier: teacher tokens {tuple(teacher_tokens.shape)} and student tokens '
                                 f'{tuple(student["tokens"].shape)} differ; give both the same patch size, class '
                                 'token and embedding width.')
            losses.update(self.dyvm_loss(student, logits, teacher_logits, teacher_tokens))
            return losses

    return DyVMClassifier


@MODELS.register_module(name='DyVMClassifier')
def build_dyvm_classifier(**kwargs):
    return _classifier_class()(**kwargs)
