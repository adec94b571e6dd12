{
  "targets": [
    {
      "target_name": "darefs_sys",
      "sources": ["darefs_sys.c"],
      "cflags": ["-O2", "-Wall", "-Wextra"]
    }
  ]
}
