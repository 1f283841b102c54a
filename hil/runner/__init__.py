"""The scenario runner: scenario files (hil/scenarios/) played against a gateway, one testcase per expectation."""
