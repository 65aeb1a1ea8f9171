// Package installtest checks, from its tests alone, that the tool installs
// the way the README says: make install, with PREFIX and DESTDIR.
package installtest
