"""How the GPU backends split a long sequence into pieces run in parallel (Triton's forward chunks and backward
segments, the CUDA kernels' segments): only when the sequences alone leave the GPU short of work."""


def split_length(name: str, forced, multiple: int, block: int, programs: int, minimum: int, batch: int, dim: int,
                 directions: int, length: int) -> int:
    """Steps per parallel piece of the sequence (``length``: not split). Split when the sequences give fewer than
    ``programs`` programs (blocks) of ``block`` channels and the sequence holds at least two pieces of ``minimum``
    steps; the pieces, multiples of ``multiple`` (the backward's checkpoints fall on their boundaries), then bring
    the programs up to ``programs``. ``forced`` (the module constant ``name``), when set, is the length."""
    if forced is not None:
        if forced <= 0 or forced % multiple:
            raise ValueError(f'{name} must be a positive multiple of {multiple}, got {forced}.')
        return min(forced, length)
    sequences = batch * dim * directions // block
    if sequences >= programs or length < 2 * minimum:
        return length
    pieces = min(-(-programs // max(sequences, 1)), length // minimum)
    piece = -(-length // pieces)
    return -(-piece // multiple) * multiple
