"""The memorag demo page: ``streamlit run demo/demo.py`` (the same page as ``memorag ui``).

The page itself is ``memorag.demo_app``, shipped inside the package so that ``memorag ui``
works from any install; this file is the entry point the original project promised.
"""

from memorag.demo_app import main

main()
