from .plain_pyramid import PlainPyramidNeck

__all__ = ['PlainPyramidNeck']
