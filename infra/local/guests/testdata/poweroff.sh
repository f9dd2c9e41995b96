#!/bin/bash
# User data that shuts its instance down from inside (test_real_guests.py), once it has run.
echo "powering off" > /var/lib/poweroff-ran
systemctl poweroff --no-block
