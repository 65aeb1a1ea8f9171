// Package svg draws a journey, or two runs overlaid, as an SVG ladder: the
// network namespaces as boxes around their interfaces, and the hops as
// numbered arrows in time order, with per-hop time, verdicts and drops.
package svg
