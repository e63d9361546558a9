"""Built-in evaluation and calibration sentences, and readers for user text and MNIST."""

from weightshare.data.mnist import MNIST, load_mnist
from weightshare.data.sentences import calibration_sentences, eval_sentences
from weightshare.data.text import read_texts

__all__ = ["MNIST", "calibration_sentences", "eval_sentences", "load_mnist", "read_texts"]
