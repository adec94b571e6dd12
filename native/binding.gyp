{
  "targets": [
    {
      "target_name": "darefs_sys",
      "sources": ["darefs_sys.c"],
      "cflags": ["-O2", "-Wall", "-Wextra"]
    },
    {
      "target_name": "darefs_fuse",
      "sources": ["darefs_fuse.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-pthread"],
      "ldflags": ["-pthread"]
    }
  ]
}
