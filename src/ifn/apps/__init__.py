"""The applications, one layer above fit / breed / evaluate (and below the `ifn` command, ifn.cli):

    reconstruct   photos -> face parameters, landmarks, mesh (`from ifn import reconstruct`); its parts:
    checkpoint    which trained network, loaded weights-only, as a predictor
    photos        the input photos and face boxes
    result        Reconstruction, built from the render of the estimate; the not-a-face warning
    mesh_io       the outputs of `ifn reconstruct` (meshes, overlay, JSON, landmarks)
    boxes         face-box files (`ifn reconstruct --boxes`)
    edit          relighting and appearance edits of photos
    export        ONNX export and onnxruntime inference

Only ifn.cli and the stage / report modules at the top (ifn.paper, ...) import from here (tests/test_layout.py).
"""
