"""Stage: U/K annotation — sentence segmentation + labellers for the query-understanding
span U and the key sentence K of a reasoning trace. Public entry point: :func:`annotate_file`."""

from ..sentences import Sentence, segment
from .labellers import HeuristicLabeller, LabellerConfig, LLMLabeller
from .stage import annotate_file

__all__ = ["HeuristicLabeller", "LLMLabeller", "LabellerConfig", "Sentence", "annotate_file", "segment"]
