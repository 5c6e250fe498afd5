"""layercheck_fms: run an IBM fms model with forward hooks and write a layercheck capture.

`python -m layercheck_fms --request REQ.json --out OUT.safetensors` answers a
`layercheck-request/1` with a `layercheck-capture/1` file; see README.md.
"""

__version__ = "0.1.0"
