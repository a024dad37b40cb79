"""The `.sgl` language: grammar (`sgl.lark`), parser (`parser`), syntax tree (`nodes`), errors (`errors`)."""
