{
  "targets": [
    {
      "target_name": "xlock",
      "sources": ["native/xlock.c"],
      "cflags_c": ["-std=gnu11", "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "xcode_settings": { "OTHER_CFLAGS": ["-std=gnu11", "-O2", "-Wall"] }
    }
  ]
}
