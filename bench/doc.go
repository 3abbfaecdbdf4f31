// Command bench is hsdal's benchmark harness: with no flags it starts a local
// cluster (PostgreSQL primary, two hot standbys, Redis), loads a synthetic
// homeserver data set, runs the scenarios against every variant and writes a
// report.
package main
