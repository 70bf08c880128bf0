"""The built-in tiny model's world and tools (the model itself is ``hsa_core.models.tiny``).

``domain``    procedural clips and captions: the training data and the evaluation prompts
``checker``   reads a clip and its caption, reports which attributes are right
``evaluate``  the checker's scores of the model (``hsa-video eval-tiny``)
``report``    the evaluation's Markdown report and sample strip
``train``     the training behind ``hsa-video train-tiny``
"""
