"""The wording of a weights-vs-model mismatch, shared by every reader in `keras_resnet.weights`."""


def mismatch_problems(missing, unexpected, mismatched, shown=8) -> list:
    """The phrases of a weights-vs-model error: the first `shown` names of each kind."""
    def head(items):
        return ", ".join(items[:shown]) + (f" ... ({len(items)} in all)" if len(items) > shown
                                           else "")
    labels = ("missing in the file", "not in the model", "shape mismatch")
    return [f"{label}: {head(items)}" for label, items in zip(labels, (missing, unexpected,
                                                                      mismatched)) if items]
