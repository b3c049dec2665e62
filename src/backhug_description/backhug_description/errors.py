"""The one exception type of backhug_description."""


class DescriptionError(ValueError):
    """Invalid device config or description; the message names the key and the value."""
