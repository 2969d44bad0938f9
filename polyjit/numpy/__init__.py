"""TEMP"""
from .. import lax
