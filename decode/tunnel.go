package decode

// Tunnels the filter looks into, by how the outer packet says so: UDP to a
// VXLAN or Geneve port, or an IP protocol.
const (
	PortVXLAN      = 4789 // IANA's VXLAN port
	PortVXLANLinux = 8472 // Linux's VXLAN port before IANA's, flannel's
	PortGeneve     = 6081
	ProtoIPIP      = 4  // IPv4 in IPv4 or IPv6
	ProtoIPv6      = 41 // IPv6 in IPv4 (SIT) or IPv6
	ProtoGRE       = 47
	// EtherTypes in a tunnel header (GRE's and Geneve's protocol type)
	// and an inner Ethernet header.
	EtherIPv4 = 0x0800
	EtherIPv6 = 0x86dd
	EtherTEB  = 0x6558 // transparent Ethernet bridging: an Ethernet frame follows
)
