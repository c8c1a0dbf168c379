"""The pyfunc of a registered model set, as MLflow "models from code": no pickle in the set.

``register_model_set`` logs this file as the set's ``python_model``; MLflow runs it on load (in
a notebook, a job or a server), and all it does is build the model-set pyfunc from the installed
manymodels (the set's own wheel where the server built its environment). Nothing in a set is
unpickled: the per-key models are skops or JSON payloads verified against the manifest.
"""

from mlflow.models import set_model

from manymodels.registry.pyfunc import pyfunc_class

set_model(pyfunc_class()())
