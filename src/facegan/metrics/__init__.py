"""Quality measures of generated images."""
