"""Task pipelines (vision, text, speech, generation): not yet built."""
