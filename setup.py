"""The evaluator's PNG kernel, ``src/bddseg/_fastpng.c`` (plain C and the CPython API): the one
thing of the build that pyproject.toml holds only in an experimental table. Everything else
is in pyproject.toml.

``optional``: without a C compiler the install goes on, and bddseg decodes masks through
pyspng instead (same numbers, about 4x slower to evaluate; see bddseg.fastpng).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("bddseg._fastpng", ["src/bddseg/_fastpng.c"], optional=True)])
