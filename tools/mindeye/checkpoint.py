"""Reading checkpoints and loading them into rebuilt modules with strict key checks."""
import os

import torch

from .errors import ExportError

MAX_LISTED_KEYS = 8


def read_state_dict(path):
    """Return the flat name -> tensor dict of a MindEye checkpoint (torch.save output).

    Accepts the training scripts' {'model_state_dict': ...} wrapper, a {'state_dict': ...}
    wrapper or a bare state dict, and drops DistributedDataParallel's 'module.' prefixes.
    """
    if not os.path.isfile(path):
        raise ExportError('MODEL_FILE_MISSING', 'Checkpoint file not found.', file=path,
                          fix='pass the path of a MindEye .pth checkpoint with --checkpoint')
    try:
        obj = torch.load(path, map_location='cpu')
    except Exception as err:  # torch raises several unrelated types for a bad file
        raise ExportError('CHECKPOINT_INVALID', 'torch.load could not read the checkpoint.', file=path,
                          value=f'{type(err).__name__}: {err}', expected='a file written by torch.save',
                          fix='check that the download is complete (compare its size with the Hugging Face listing)')
    for wrapper in ('model_state_dict', 'state_dict'):
        if isinstance(obj, dict) and wrapper in obj and isinstance(obj[wrapper], dict):
            obj = obj[wrapper]
            break
    if not isinstance(obj, dict) or not all(torch.is_tensor(v) for v in obj.values()):
        raise ExportError('CHECKPOINT_INVALID', 'The checkpoint contains no state dict of tensors.', file=path,
                          field='(top level)', value=type(obj).__name__,
                          expected="a dict of tensors, or a dict with 'model_state_dict'",
                          fix='pass a MindEye training checkpoint, not an optimizer or config file')
    out = {}
    for key, value in obj.items():
        while key.startswith('module.'):
            key = key[len('module.'):]
        out[key] = value
    return out


def _shape(t):
    return list(t.shape)


def strict_load(module, state, path, what, optional=lambda key: False, ignored=lambda key: False):
    """Load `state` into `module`, rejecting unexpected, missing and mis-shaped keys.

    `optional` keys may be absent (the module keeps its computed value); `ignored` keys are
    known parts of the checkpoint that this export does not use.
    """
    expected = module.state_dict()
    unexpected = [k for k in state if k not in expected and not ignored(k)]
    missing = [k for k in expected if k not in state and not optional(k)]
    mismatched = [k for k in state if k in expected and tuple(state[k].shape) != tuple(expected[k].shape)]
    if unexpected:
        listed = unexpected[:MAX_LISTED_KEYS]
        raise ExportError(
            'CHECKPOINT_KEYS', f'The checkpoint has {len(unexpected)} key(s) that the {what} does not have.',
            file=path, field=listed[0],
            value='; '.join(f'{k} {_shape(state[k])}' for k in listed) + (' ...' if len(unexpected) > len(listed) else ''),
            expected=f'only keys of the {what} ({len(expected)} tensors)',
            fix='check --arch (mindeye1 or mindeye2) and that this is the right checkpoint file; '
                'a checkpoint from a modified training script needs a matching module in tools/mindeye/')
    if missing:
        listed = missing[:MAX_LISTED_KEYS]
        raise ExportError(
            'CHECKPOINT_KEYS', f'The checkpoint lacks {len(missing)} key(s) of the {what}.',
            file=path, field=listed[0],
            value='; '.join(f'{k} (expected {_shape(expected[k])})' for k in listed)
            + (' ...' if len(missing) > len(listed) else ''),
            expected='every parameter of the network',
            fix='the file may be a different network (for example the low-level autoencoder, which goes to '
                '--lowlevel-checkpoint) or a truncated download')
    if mismatched:
        k = mismatched[0]
        raise ExportError(
            'CHECKPOINT_SHAPE', f'{len(mismatched)} checkpoint tensor(s) have another shape than the {what}.',
            file=path, field=k, value=_shape(state[k]), expected=str(_shape(expected[k])),
            fix='the network was built with other sizes; check --subject and --width')
    module.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=False)
    return module


def count_indexed(state, prefix, suffix):
    """Count the i in keys '<prefix><i><suffix>'."""
    n = 0
    while f'{prefix}{n}{suffix}' in state:
        n += 1
    return n


def require_key(state, key, path, what):
    if key not in state:
        raise ExportError('CHECKPOINT_KEYS', f'The checkpoint lacks a key that every {what} has.', file=path,
                          field=key, expected=f'a tensor named {key}',
                          fix='check --arch and that the file is a MindEye checkpoint of that kind')
    return state[key]
