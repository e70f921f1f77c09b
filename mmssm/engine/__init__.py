from .cuda_graph import CUDAGraphForward, CUDAGraphTrainStep  # noqa: F401
from .hooks import *  # noqa: F401,F403
from .optimizers import *  # noqa: F401,F403
