package main

// version is the tool's version, recorded in every recording.
const version = "0.1.0"
