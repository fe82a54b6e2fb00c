"""The Azure Functions entry point: create the app and register the blueprints. Nothing else.

The host imports this module to index the functions; anything that could fail
(settings, SDK clients) happens on first invocation instead (design §10).
"""

import azure.functions as func

from handlers import cleanup_worker, device_check, queue_watch, reconcile_timer, vm_created, vm_deleted, vm_power

app = func.FunctionApp()
for handler in (vm_created, vm_power, vm_deleted, cleanup_worker, device_check, reconcile_timer, queue_watch):
    app.register_functions(handler.blueprint)
