"""Helpers the tests share (pytest.ini puts tests/ and .collections/ on the path): real etcd
servers (etcdserver, tlsetcd, misbehaving_etcd, fake_etcd), throw-away network namespaces (netns),
agents on them (cluster) and the Docker lab (labtools). Import them as `support.<module>`."""
