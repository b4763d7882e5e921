"""The launcher: the `stocktracker` command, the local servers it starts and the services it supervises. The one
package allowed to know every service (services know only `shared`, never each other or the launcher)."""
