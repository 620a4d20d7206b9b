"""Calico's CNI gRPC dataplane: the server the Calico CNI plugin calls to create pods' interfaces."""
