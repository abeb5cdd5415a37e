"""One record through the stages (`record`), the resumable loop (`runner`), run state."""
