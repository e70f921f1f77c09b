"""Reading an original project's checkpoint file for the conversion tools (tools/model_converters/)."""
import argparse
import pickle
import re
import sys

import torch


def load_checkpoint_file(src: str, trust_pickle: bool = False):
    """torch.load(src) with ``weights_only=True``, allowing only ``argparse.Namespace`` beside plain data (the
    original training scripts save their 'args'). A file that needs more (an MMEngine training checkpoint with its
    message hub, say) stops the tool with a message naming the global it needs, unless ``trust_pickle`` allows
    ``weights_only=False`` (which runs any code the file holds)."""
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(src, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r'Unsupported global: GLOBAL (\S+)', str(error))
        reason = f'it needs {found.group(1)}' if found else str(error).strip().splitlines()[-1]
        if not trust_pickle:
            sys.exit(f'error: {src} cannot be loaded with torch.load(weights_only=True): it holds Python objects '
                     f'beside tensors ({reason}).\nLoading it with weights_only=False would run whatever code it '
                     f'holds. If you trust where the file comes from, run again with --trust-pickle.')
        print(f'warning: {src} needs weights_only=False ({reason}); loading it so, as --trust-pickle allows.',
              file=sys.stderr)
        return torch.load(src, map_location='cpu', weights_only=False)
