"""mmpretrain 1.2 + transformers >= 5: the guard in mmssm makes the task packages import, with a warning.

Each case runs in a fresh interpreter with a stand-in transformers 5 on sys.path: a distribution that reports
version 5.0.0 and lacks the names mmpretrain's BLIP code imports, which is how the real 5.x breaks it.
"""
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip('mmpretrain')


@pytest.fixture
def fake_transformers_5(tmp_path):
    package = tmp_path / 'transformers'
    package.mkdir()
    (package / '__init__.py').write_text("__version__ = '5.0.0'\n")
    dist_info = tmp_path / 'transformers-5.0.0.dist-info'
    dist_info.mkdir()
    (dist_info / 'METADATA').write_text('Metadata-Version: 2.1\nName: transformers\nVersion: 5.0.0\n')
    return tmp_path


def run_python(code, site_dir):
    prelude = f'import sys; sys.path.insert(0, {str(site_dir)!r})\n'
    return subprocess.run([sys.executable, '-c', prelude + textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=300)


def test_stand_in_reproduces_the_failure(fake_transformers_5):
    result = run_python('import mmpretrain.models', fake_transformers_5)
    assert result.returncode != 0, 'the stand-in transformers 5 should break mmpretrain 1.2 as the real one does'
    assert 'ImportError' in result.stderr


def test_guard_lets_task_packages_import_and_says_why(fake_transformers_5):
    result = run_python("""
        import warnings
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            import mmssm
            from mmssm.utils import mmpretrain_multimodal_is_broken
            assert mmpretrain_multimodal_is_broken()
            import mmseg.models, mmdet.models, mmpretrain.models
            from mmpretrain.registry import MODELS
            MODELS.build(dict(type='ResNet', depth=18))
        messages = [str(w.message) for w in caught]
        assert any("pip install 'transformers<5'" in m for m in messages), messages
        print('ok')
    """, fake_transformers_5)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith('ok')


def test_guard_is_inactive_without_transformers_5():
    from mmssm.utils import mmpretrain_multimodal_is_broken
    if mmpretrain_multimodal_is_broken():
        pytest.skip('this environment really has transformers >= 5 installed')
    result = subprocess.run([sys.executable, '-c', textwrap.dedent("""
        import sys, mmssm
        from mmssm.utils.compat import _DisableMultimodalFinder, mmpretrain_multimodal_is_broken
        assert not mmpretrain_multimodal_is_broken()
        assert not any(isinstance(f, _DisableMultimodalFinder) for f in sys.meta_path)
    """)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
