"""Command-line tools that are not the library: run from the repository root as
`python -m tools.<name>` (convert_c3d, torch_reference) or `bash tools/<name>.sh`."""
