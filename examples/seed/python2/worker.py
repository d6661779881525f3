# /usr/bin/env python
# -*- coding: utf-8 -*-

import time, Queue
from multiprocessing.managers import BaseManager

class QueueManager(BaseManager):
    pass

QueueManager.register('get_task_queue')
QueueManager.register('get_result_queue')

server_addr = '127.0.0.1'
print 'Connect to server ', server_addr
m = QueueManager(address=(server_addr, 5000), authkey='lihui')
m.connect()

task = m.get_task_queue()
result = m.get_result_queue()

for i in range(10):
    try:
        n = task.get(timeout=1)
        print 'Get: %d <= manager' % n
        r = n * n
        time.sleep(1)
        print 'Put: %d => manager' % r
        result.put(r)
        print '#' * 30
    except Queue.Empty:
        print 'task queue is empty'
print 'worker exit'
