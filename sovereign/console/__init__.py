"""The web console: pages for analysts, compliance officers and branch IT, over the same REST
API a script uses. An outer layer: the coordinator's console (`web.mount_console`) reads only
the coordinator service's API; branch IT's pages (`node_console`) run on the node, where its
key, ledger and own forecast live. No CDN: every asset is served by the app."""
