"""Resources (`kind`/`version`/`metadata`/`spec`) as frozen typed models with a YAML round trip.

Import each from its module: this package loads none of them, so a module that names only a
JSON shape (`teleport.types.shapes`) does not build every resource model.
"""
